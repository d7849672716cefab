"""Connecting to Temporal from settings: plain TCP on a private network, or TLS, with a
client certificate (mTLS) where the frontend asks for one. Used by every process that
connects (worker.py, starter.py, the HTTP API), so a GPU machine joining over the network
needs only LONGTALK_TEMPORAL_* settings, and every client (with the workers built on it)
reads and writes payloads with the project's data converter (longtalk.converter)."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client
from temporalio.service import TLSConfig

from .converter import DATA_CONVERTER
from .errors import ServiceError
from .settings import PREFIX, Settings
from .text import first_line


def _read(name: str, path: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ValueError(f"{PREFIX}{name.upper()}: cannot read {path}: {exc.strerror or exc}") from None


def tls_config(settings: Settings) -> TLSConfig | bool:
    """False (plain TCP), or the TLS settings: a CA to trust (else the system's roots), a
    client certificate and key for mTLS (both or neither), the server name to check."""
    if not settings.temporal_tls:
        if settings.temporal_tls_cert or settings.temporal_tls_key or settings.temporal_tls_ca:
            raise ValueError(f"{PREFIX}TEMPORAL_TLS: set it to true to use the TLS files given")
        return False
    cert = _read("temporal_tls_cert", settings.temporal_tls_cert)
    key = _read("temporal_tls_key", settings.temporal_tls_key)
    if (cert is None) != (key is None):
        raise ValueError(f"{PREFIX}TEMPORAL_TLS_CERT and {PREFIX}TEMPORAL_TLS_KEY: mTLS needs both")
    return TLSConfig(server_root_ca_cert=_read("temporal_tls_ca", settings.temporal_tls_ca),
                     client_cert=cert, client_private_key=key,
                     domain=settings.temporal_tls_server_name or None)


class TemporalUnreachable(ServiceError):
    """No connection to the Temporal frontend at the configured address."""


async def connect(settings: Settings) -> Client:
    """A client for the settings' frontend (with the project's data converter);
    TemporalUnreachable when it cannot connect (the SDK's core reports a failed connection as a
    RuntimeError)."""
    tls = tls_config(settings)
    try:
        return await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace,
                                    tls=tls, data_converter=DATA_CONVERTER)
    except RuntimeError as exc:
        raise TemporalUnreachable(f"Temporal at {settings.temporal_address}: {first_line(exc)}") from exc
