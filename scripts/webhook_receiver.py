#!/usr/bin/env python3
"""A webhook receiver for trying the HTTP API's webhooks on this machine (README, "HTTP API").

    .venv/bin/python scripts/webhook_receiver.py 8002            # until Ctrl-C
    .venv/bin/python scripts/webhook_receiver.py 8002 --count 1  # exits after one delivery

Listens on 127.0.0.1:PORT and checks each POST's Standard Webhooks signature (headers
`webhook-id`, `webhook-timestamp`, `webhook-signature`) with the secret of the stack that
`make up` started (LONGTALK_API_WEBHOOK_SECRET, else the one it generated into
<data>/api/webhook_secret). It prints one line per delivery, the render's id and status:

    webhook msg_...: signature valid, render 3f2c... COMPLETED

and answers 204, or 401 to a delivery whose signature or timestamp is wrong (the API then
retries it). The API only delivers to 127.0.0.1 when the stack allows that host:
`LONGTALK_URL_ALLOW_HOSTS=127.0.0.1 make up`.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.webhooks import sign  # noqa: E402  (the signature the API computes)
from longtalk.stack import Stack, webhook_secret  # noqa: E402

TOLERANCE_S = 300  # Standard Webhooks: refuse a timestamp further off than this


def verify(secret: str, headers, body: bytes, now: float | None = None) -> str | None:
    """None when the delivery is signed with `secret` and recent; else why not."""
    msg_id, stamp = headers.get("webhook-id"), headers.get("webhook-timestamp")
    if not msg_id or not stamp or not stamp.isdigit():
        return "webhook-id or webhook-timestamp missing"
    if abs((time.time() if now is None else now) - int(stamp)) > TOLERANCE_S:
        return "webhook-timestamp too far from now"
    expected = sign(secret, msg_id, int(stamp), body)
    # the header may carry several space-separated signatures (a secret being rotated)
    if any(hmac.compare_digest(expected, given) for given in headers.get("webhook-signature", "").split()):
        return None
    return "signature does not match"


def serve(port: int, secret: str, count: int | None) -> None:
    verified = 0

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            nonlocal verified
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            problem = verify(secret, self.headers, body)
            if problem is None:
                status = json.loads(body)
                print(f"webhook {self.headers['webhook-id']}: signature valid, render {status.get('id')} "
                      f"{status.get('status')}", flush=True)
                verified += 1
            else:
                print(f"webhook refused: {problem}", flush=True)
            self.send_response(204 if problem is None else 401)
            self.end_headers()

        def log_message(self, *args):  # one line per delivery is printed above
            pass

    with HTTPServer(("127.0.0.1", port), Handler) as server:
        while count is None or verified < count:
            server.handle_request()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("port", type=int)
    ap.add_argument("--count", type=int, default=None, help="exit after this many valid deliveries")
    args = ap.parse_args(argv)
    stack, _ = Stack.open(dict(os.environ))  # the running stack's recorded settings
    secret = webhook_secret(stack.settings, stack.api_dir)
    if not secret:
        print(f"no webhook secret: start the stack first (make up); looked in {stack.api_dir}", file=sys.stderr)
        return 2
    try:
        serve(args.port, secret, args.count)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
