"""The object store as a RunPod worker sees it: one presigned URL per object, no credentials.

The dispatcher signs a GET URL for every object the window reads and a PUT URL for every
object it writes (longtalk.window_io.input_keys / output_keys); PresignedStore offers the
ObjectStore methods WindowIO uses over those URLs. An object's size comes from a one-byte
ranged GET (Content-Range), since a GET signature does not cover HEAD. Presigned PUTs carry
no x-amz-meta headers (they are not signed), so a clip's attempt/worker marker is in its
meta.json only.
"""

from __future__ import annotations

import json
from pathlib import Path

import urllib3

from ..errors import StorageError, TransientError


class PresignedStore:
    def __init__(self, get: dict[str, str], put: dict[str, str], timeout_s: float = 60.0) -> None:
        self.get_urls, self.put_urls = get, put
        self.http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=10, read=timeout_s),
            retries=urllib3.Retry(total=3, backoff_factor=0.5, status_forcelist=[500, 502, 503, 504]),
            maxsize=16,
        )

    def _url(self, urls: dict[str, str], key: str, method: str) -> str:
        if key not in urls:  # the dispatcher signs every key the window needs: this is its bug
            raise TransientError(f"the job carries no presigned {method} URL for {key}")
        return urls[key]

    def _request(self, method: str, key: str, urls: dict[str, str], **kwargs) -> urllib3.BaseHTTPResponse:
        try:
            return self.http.request(method, self._url(urls, key, method), **kwargs)
        except urllib3.exceptions.HTTPError as exc:
            raise StorageError(f"object store unreachable for {method} {key}: {type(exc).__name__}") from None

    @staticmethod
    def _check(resp: urllib3.BaseHTTPResponse, method: str, key: str) -> None:
        if resp.status >= 300:
            # 403: the URL expired or its signature does not match (a clock off, another host)
            raise StorageError(f"object store: {method} {key} answered HTTP {resp.status}")

    # ---- reads --------------------------------------------------------------
    def get_bytes(self, key: str, offset: int = 0, length: int = 0) -> bytes:
        headers = {}
        if offset or length:
            headers["Range"] = f"bytes={offset}-{offset + length - 1 if length else ''}"
        resp = self._request("GET", key, self.get_urls, headers=headers)
        self._check(resp, "GET", key)
        return resp.data

    def get_json_or_none(self, key: str):
        """The JSON object, or None when there is none (404)."""
        resp = self._request("GET", key, self.get_urls)
        if resp.status == 404:
            return None
        self._check(resp, "GET", key)
        return json.loads(resp.data)

    def size(self, key: str) -> int | None:
        resp = self._request("GET", key, self.get_urls, headers={"Range": "bytes=0-0"})
        if resp.status == 404:
            return None
        if resp.status == 416:  # an empty object has no byte 0
            return 0
        self._check(resp, "GET", key)
        total = resp.headers.get("Content-Range", "").rpartition("/")[2]
        return int(total) if total.isdigit() else len(resp.data)

    def download(self, key: str, path: Path | str) -> Path:
        resp = self._request("GET", key, self.get_urls, preload_content=False)
        try:
            self._check(resp, "GET", key)
            with open(path, "wb") as out:
                for chunk in resp.stream(1 << 20):
                    out.write(chunk)
        finally:
            resp.release_conn()
        return Path(path)

    # ---- writes -------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream",
                  metadata: dict[str, str] | None = None) -> None:
        resp = self._request("PUT", key, self.put_urls, body=data, headers={"Content-Type": content_type})
        self._check(resp, "PUT", key)

    def put_json(self, key: str, value) -> None:
        self.put_bytes(key, json.dumps(value, indent=2, sort_keys=True).encode(), "application/json")

    def put_file(self, key: str, path: Path | str, content_type: str = "application/octet-stream",
                 metadata: dict[str, str] | None = None) -> None:
        self.put_bytes(key, Path(path).read_bytes(), content_type)
