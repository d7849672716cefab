"""Real media for the tests, cut from the bundled example or made with ffmpeg, once per session
(`transcode` and `cut_audio`, which the benchmarks use too, live in `longtalk.testing`)."""

from __future__ import annotations

from pathlib import Path

import ffmpeg
import numpy as np

from longtalk import av_io
from longtalk.testing import EXAMPLES, transcode

ROOT = Path(__file__).resolve().parent.parent


def make_video(dst: Path, seconds: float, fps: int = 30, size: str = "320x240") -> Path:
    """A moving source video made from the example portrait (pans across it)."""
    return transcode(EXAMPLES / "portrait.png", dst, {"loop": 1}, t=f"{seconds}", r=fps,
                     vf=f"scale={size.replace('x', ':')},rotate=0.05*sin(2*PI*t/2):fillcolor=gray",
                     pix_fmt="yuv420p", **{"c:v": "libx264"})


def samples_16k(path: Path) -> int:
    """Independent count: let ffmpeg resample to 16 kHz mono s16 and count the bytes."""
    out = av_io.run_ffmpeg(ffmpeg.input(str(path)).output("pipe:", ac=1, ar=16000, format="s16le"))
    return len(out) // 2


def moov_before_mdat(path: Path) -> bool:
    """faststart: the moov box comes before mdat at the top level."""
    data = path.read_bytes()
    pos, order = 0, []
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8].decode("latin-1")
        order.append(kind)
        if size == 1:
            size = int.from_bytes(data[pos + 8:pos + 16], "big")
        if size < 8:
            break
        pos += size
    return "moov" in order and "mdat" in order and order.index("moov") < order.index("mdat")


def frame_checksums(path: Path) -> list[int]:
    import av

    with av.open(str(path)) as c:
        return [int(np.asarray(f.to_ndarray(format="gray"), np.int64).sum()) for f in c.decode(video=0)]


class MediaServer:
    """Serves files on 127.0.0.1 (which the test settings allow-list) for URL inputs.

    /files/<name>   the file, with its Content-Length
    /flaky/<name>   the first request sends half the file and hangs up (the Content-Length
                    says more); every later request gets the whole file
    /redirect/<n>   302 to `redirects[n]`
    Query strings are ignored; `requests` lists the paths asked for, in order.
    """

    def __init__(self, files: dict[str, bytes], redirects: dict[str, str] | None = None) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.files = dict(files)
        self.redirects = dict(redirects or {})
        self.requests: list[str] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                with server.lock:
                    server.requests.append(path)
                    first = server.requests.count(path) == 1
                kind, _, name = path.lstrip("/").partition("/")
                if kind == "redirect" and name in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[name])
                    self.end_headers()
                    return
                body = server.files.get(name)
                if kind not in ("files", "flaky") or body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if kind == "flaky" and first:
                        self.wfile.write(body[:len(body) // 2])
                        self.wfile.flush()
                        self.connection.shutdown(2)  # socket.SHUT_RDWR: hang up mid-body
                        return
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
