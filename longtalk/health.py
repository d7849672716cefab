"""A worker process's probes over HTTP (LONGTALK_HEALTH_PORT), for Kubernetes:

    GET /livez    200 while the process's event loop runs (also while it waits for its
                  ComfyUI and while it stops: a stopping worker is finishing a window)
    GET /readyz   200 once the worker polls Temporal (a GPU worker: after its ComfyUI answered
                  and passed the doctor check), 503 before that and once it is stopping

Each answer is one line of JSON: {"ready": bool, "state": "..."}.
"""

from __future__ import annotations

import asyncio
import json


class Health:
    def __init__(self) -> None:
        self.ready = False
        self.state = "starting"

    def set(self, state: str, ready: bool = False) -> None:
        self.state, self.ready = state, ready

    async def serve(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._answer, host, port)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass  # the headers: not needed
            parts = request.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else ""
            if path == "/livez":
                status = 200
            elif path == "/readyz":
                status = 200 if self.ready else 503
            else:
                status = 404
            body = json.dumps({"ready": self.ready, "state": self.state}).encode() + b"\n"
            reason = {200: "OK", 503: "Service Unavailable", 404: "Not Found"}[status]
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
