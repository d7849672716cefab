"""Object store access (MinIO or any S3-compatible server) behind one small class.

Every key the service writes is deterministic, so `exists` is how activities find work
that is already done. Network failures surface as StorageError (retryable); the secret
key never appears in an error message.
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import urllib3
from minio import Minio
from minio.error import S3Error

from .errors import StorageError
from .settings import Settings


class ObjectStore:
    CONNECTIONS = 16  # kept open to the S3 server, per process (threads beyond wait for one)

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = False,
        region: str = "us-east-1",
        public_endpoint: str | None = None,
    ) -> None:
        # Short timeouts and a few quick retries: a stopped object server must surface as a
        # retryable error, not a hang; Temporal's retry policy does the long waiting.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5, read=60),
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
            maxsize=self.CONNECTIONS,
        )
        self.endpoint = endpoint
        self.bucket = bucket
        self.client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure,
            region=region, http_client=http,
        )
        # Presigning is computed offline (the region is given), so a client for the address
        # users reach (e.g. the host's port, not the compose network name) can sign for it.
        self.public_client = self.client if not public_endpoint else Minio(
            public_endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> "ObjectStore":
        return cls(
            settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key, settings.bucket,
            secure=settings.s3_secure, region=settings.s3_region,
            public_endpoint=settings.s3_public_endpoint or None,
        )

    # ---- bucket -------------------------------------------------------------
    def ensure_bucket(self) -> None:
        with _storage_errors("create bucket"):
            if not self.client.bucket_exists(self.bucket):
                try:
                    self.client.make_bucket(self.bucket)
                except S3Error as exc:
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

    # ---- writes -------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream",
                  metadata: dict[str, str] | None = None) -> None:
        with _storage_errors(f"put {key}"):
            self.client.put_object(self.bucket, key, io.BytesIO(data), len(data),
                                   content_type=content_type, metadata=metadata)

    def put_json(self, key: str, value) -> None:
        self.put_bytes(key, json.dumps(value, indent=2, sort_keys=True).encode(), "application/json")

    def put_file(self, key: str, path: Path | str, content_type: str = "application/octet-stream",
                 metadata: dict[str, str] | None = None) -> None:
        with _storage_errors(f"put {key}"):
            self.client.fput_object(self.bucket, key, str(path), content_type=content_type,
                                    metadata=metadata)

    def copy(self, src: str, dst: str) -> None:
        """A server-side copy inside the bucket (no bytes through this process)."""
        from minio.commonconfig import CopySource

        with _storage_errors(f"copy {src}"):
            self.client.copy_object(self.bucket, dst, CopySource(self.bucket, src))

    def delete(self, key: str) -> None:
        with _storage_errors(f"delete {key}"):
            self.client.remove_object(self.bucket, key)

    def delete_many(self, keys: list[str]) -> int:
        """Batch delete (S3 multi-object delete, 1000 keys a request)."""
        from minio.deleteobjects import DeleteObject

        with _storage_errors(f"delete {len(keys)} objects"):
            errors = list(self.client.remove_objects(self.bucket, (DeleteObject(k) for k in keys)))
        if errors:
            raise StorageError(f"object store: {len(errors)} of {len(keys)} deletes failed: {errors[0].code}")
        return len(keys)

    def delete_prefix(self, prefix: str) -> int:
        return self.delete_many(list(self.list(prefix)))

    # ---- reads --------------------------------------------------------------
    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def size(self, key: str) -> int | None:
        try:
            return self.client.stat_object(self.bucket, key).size
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound", "NoSuchBucket"):
                return None
            raise StorageError(f"object store: stat {key} failed: {exc.code}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageError(f"object store at {self.endpoint} unreachable: {type(exc).__name__}") from None

    def metadata(self, key: str) -> dict[str, str]:
        with _storage_errors(f"stat {key}"):
            stat = self.client.stat_object(self.bucket, key)
        return {k.lower().removeprefix("x-amz-meta-"): v for k, v in (stat.metadata or {}).items()
                if k.lower().startswith("x-amz-meta-")}

    def get_bytes(self, key: str, offset: int = 0, length: int = 0) -> bytes:
        with _storage_errors(f"get {key}"):
            resp = self.client.get_object(self.bucket, key, offset=offset, length=length)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

    def get_json(self, key: str):
        return json.loads(self.get_bytes(key))

    def get_json_or_none(self, key: str):
        # a HEAD first, not one GET: the embedded S3 server (rclone) answers a missing object's
        # GET with a text/xml error body, which minio-py does not parse as NoSuchKey
        return self.get_json(key) if self.exists(key) else None

    def get_json_many(self, keys: list[str]) -> list:
        """get_json_or_none of each key, in order, as many at a time as the store keeps
        connections (many small objects: a window's meta.json or quality.json for every window
        of a render)."""
        with ThreadPoolExecutor(max_workers=self.CONNECTIONS) as pool:
            return list(pool.map(self.get_json_or_none, keys))

    def download(self, key: str, path: Path | str) -> Path:
        with _storage_errors(f"get {key}"):
            self.client.fget_object(self.bucket, key, str(path))
        return Path(path)

    def list(self, prefix: str) -> Iterator[str]:
        with _storage_errors(f"list {prefix}"):
            for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
                yield obj.object_name

    def presign(self, key: str, expiry_s: int) -> str:
        with _storage_errors(f"presign {key}"):
            return self.public_client.presigned_get_object(self.bucket, key, expires=timedelta(seconds=expiry_s))

    def presign_put(self, key: str, expiry_s: int) -> str:
        """A URL that lets its holder write `key` once signed (RunPod workers: no credentials)."""
        with _storage_errors(f"presign {key}"):
            return self.public_client.presigned_put_object(self.bucket, key, expires=timedelta(seconds=expiry_s))


class _storage_errors:
    """Context manager: turn client/network failures into StorageError without secrets."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, StorageError):
            return False
        if isinstance(exc, S3Error):
            raise StorageError(f"object store: {self.what} failed: {exc.code}") from None
        if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
            raise StorageError(f"object store: {self.what} failed: {type(exc).__name__}") from None
        return False
