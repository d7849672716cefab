"""`python -m api`: the HTTP API on LONGTALK_API_ADDRESS (uvicorn), in
LONGTALK_API_PROCESSES processes sharing the address.

Nothing a request needs lives in one process only: sessions are signed cookies (one secret
for all processes: a random one is made here when none is set), /stream cursors are kept in
the bucket, webhook deliveries and purges are Temporal workflows any process's API worker runs."""

from __future__ import annotations

import logging
import os
import secrets

import uvicorn

from longtalk.settings import PREFIX, Settings
from longtalk.stack import split_host_port

from .app import create_app


def app_from_env():
    """The app of one process (uvicorn's factory when there are several)."""
    return create_app(Settings.from_env())


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()  # the composition root: the only place the API reads its environment
    host, port = split_host_port(settings.api_address)
    processes = max(1, settings.api_processes)
    print(f"API listening on http://{host}:{port} (docs: /docs), {processes} process(es)", flush=True)
    if processes == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info", access_log=False)
        return
    if not settings.api_session_secret:  # a session opened by one process must hold in the others
        os.environ[PREFIX + "API_SESSION_SECRET"] = secrets.token_urlsafe(32)
    uvicorn.run("api.__main__:app_from_env", factory=True, workers=processes, host=host, port=port,
                log_level="info", access_log=False)


if __name__ == "__main__":
    main()
