import pytest

from longtalk.errors import StorageError
from longtalk.store import ObjectStore


def test_roundtrip_range_and_listing(store, render_id):
    prefix = f"renders/{render_id}/"
    store.put_bytes(prefix + "a.bin", bytes(range(100)), metadata={"attempt": "2"})
    store.put_json(prefix + "b.json", {"x": 1})
    assert store.exists(prefix + "a.bin") and not store.exists(prefix + "missing")
    assert store.get_bytes(prefix + "a.bin", offset=10, length=5) == bytes(range(10, 15))
    assert store.get_json(prefix + "b.json") == {"x": 1}
    assert store.metadata(prefix + "a.bin") == {"attempt": "2"}
    assert sorted(store.list(prefix)) == [prefix + "a.bin", prefix + "b.json"]
    assert store.delete_prefix(prefix) == 2
    assert list(store.list(prefix)) == []


def test_unreachable_server_is_a_storage_error_without_secret(settings):
    from longtalk.stack import free_port

    dead = ObjectStore(f"127.0.0.1:{free_port()}", "key", "very-secret-value", "bucket")
    with pytest.raises(StorageError) as err:
        dead.exists("x")
    assert "very-secret-value" not in str(err.value)


def test_presigned_urls_carry_the_configured_expiry_and_cannot_be_extended(store, render_id):
    """The URL states its lifetime (MinIO refuses it after that; the embedded rclone server
    checks signatures but not the clock), and a URL edited to live longer is refused."""
    import urllib.error
    import urllib.request
    from urllib.parse import parse_qs, urlsplit

    key = f"renders/{render_id}/x.bin"
    store.put_bytes(key, b"payload")
    url = store.presign(key, 90)
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["90"]
    assert urllib.request.urlopen(url, timeout=5).read() == b"payload"
    for forged in (url.replace("X-Amz-Expires=90", "X-Amz-Expires=604800"),
                   url.replace("X-Amz-Signature=", "X-Amz-Signature=0")):
        try:
            urllib.request.urlopen(forged, timeout=5)
            raise AssertionError("a forged presigned URL was accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 403


def test_presign_for_a_public_endpoint(settings):
    s = ObjectStore(settings.s3_endpoint, "k", "secret-k", "bucket", public_endpoint="videos.example.com:9000")
    url = s.presign("renders/a/output.mp4", 60)
    assert url.startswith("http://videos.example.com:9000/bucket/renders/a/output.mp4?")
    assert "secret-k" not in url


def test_batch_delete(store, render_id):
    keys = [f"renders/{render_id}/many/{i:04d}" for i in range(1200)]  # more than one request
    for k in keys:
        store.put_bytes(k, b"x")
    assert store.delete_many(keys) == 1200
    assert list(store.list(f"renders/{render_id}/many/")) == []
