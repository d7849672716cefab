"""API keys: `name:key` pairs from LONGTALK_API_KEYS and/or the file LONGTALK_API_KEYS_FILE.

A request names its key in `Authorization`, as `Bearer KEY` or the raw key (RunPod's curl
form). Keys are compared in constant time against every configured key; the key's *name*
is what the rest of the service sees (the owner of a render). Keys are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path

from longtalk.settings import Settings

NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class Keys:
    def __init__(self, pairs: dict[str, str]) -> None:
        self._pairs = [(name, key.encode()) for name, key in pairs.items()]

    def __repr__(self) -> str:  # never show a key
        return f"Keys({', '.join(name for name, _ in self._pairs)})"

    def __len__(self) -> int:
        return len(self._pairs)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Keys":
        pairs: dict[str, str] = {}
        text = settings.api_keys
        if settings.api_keys_file:
            text += "," + Path(settings.api_keys_file).read_text()
        for i, item in enumerate(t.strip() for t in text.replace("\n", ",").split(",")):
            if not item or item.startswith("#"):
                continue
            name, sep, key = item.partition(":")
            name, key = name.strip(), key.strip()
            if not sep or not name or not key:
                raise ValueError(f"LONGTALK_API_KEYS: entry {i + 1} is not name:key")
            if not NAME.match(name):
                raise ValueError(f"LONGTALK_API_KEYS: entry {i + 1}: a name is 1-64 letters, digits, '.', '_' or '-'")
            if len(key) < 16:
                raise ValueError(f"LONGTALK_API_KEYS: the key named {name!r} is shorter than 16 characters")
            pairs[name] = key
        return cls(pairs)

    def owner(self, authorization: str | None) -> str | None:
        """The name of the key in an Authorization header, or None."""
        if not authorization:
            return None
        value = authorization.strip()
        if value[:7].lower() == "bearer ":
            value = value[7:].strip()
        given = value.encode()
        found = None
        for name, key in self._pairs:  # no early exit: the time does not depend on which key matched
            if hmac.compare_digest(given, key):
                found = name
        return found

    def fingerprint(self, name: str) -> str | None:
        """A short hash of the key named `name` (None: no such key): a dashboard session names
        it, so replacing a key ends the sessions opened with the old one."""
        for n, key in self._pairs:
            if n == name:
                return hashlib.sha256(b"longtalk-session:" + key).hexdigest()[:16]
        return None


def new_key() -> str:
    return "lt_" + secrets.token_urlsafe(32)
