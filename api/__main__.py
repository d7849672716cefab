"""`python -m api`: the HTTP API on LONGTALK_API_ADDRESS (uvicorn)."""

from __future__ import annotations

import logging

import uvicorn

from longtalk.settings import Settings
from longtalk.stack import split_host_port

from .app import create_app


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()  # the composition root: the only place the API reads its environment
    host, port = split_host_port(settings.api_address)
    print(f"API listening on http://{host}:{port} (docs: /docs)", flush=True)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", access_log=False)


if __name__ == "__main__":
    main()
