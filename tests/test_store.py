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
