"""Shortening text for messages and logs (error reasons, values a user sent, server replies)."""

from __future__ import annotations

from typing import Any

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
