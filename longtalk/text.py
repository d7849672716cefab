"""Text for messages and logs: shortened (error reasons, values a user sent, server replies)
and URLs with their secrets removed."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

ELLIPSIS = "…"
TRUNCATED = "...(truncated)"


def shorten(text: Any, limit: int = 240, marker: str = ELLIPSIS) -> str:
    """str(text) on one line (every run of white space folded to one space) in at most
    `limit` characters; a cut ends with `marker`."""
    s = " ".join(str(text).split())
    if len(s) <= limit:
        return s
    return s[: max(0, limit - len(marker))] + marker


def first_line(text: Any, limit: int = 240) -> str:
    """The first non-empty line of str(text), shortened; an exception without a message
    gives its type name."""
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    if not lines:
        return type(text).__name__ if isinstance(text, BaseException) else ""
    return shorten(lines[0], limit)


def redact_url(url: str, limit: int = 120) -> str:
    """scheme://host[:port]/path only: user info, query and fragment removed (they may carry
    tokens), shortened to `limit` characters; TRUNCATED marks anything left out. What every
    message, log line and error about a user's URL shows (the job parser and the network
    guard both use it)."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    netloc = host if port is None else f"{host}:{port}"
    if ":" in host:
        netloc = f"[{host}]" if port is None else f"[{host}]:{port}"
    text = f"{parts.scheme}://{netloc}{parts.path}"
    cut = bool(parts.query or parts.fragment or "@" in parts.netloc)
    if len(text) > limit:
        text, cut = text[:limit], True
    return text + (TRUNCATED if cut else "")
