"""Who is asking: API keys, signed session cookies and their CSRF tokens, admins.

Logging in trades an API key for a signed session cookie (HttpOnly, SameSite=Strict, Secure
unless the API binds to loopback); the key itself is never stored in the cookie, a URL or a
log. Pages act through the same /v2 routes as every client: with the cookie, those routes
also want the session's CSRF token in `X-CSRF-Token` (`Access.action_owner`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

from fastapi import Request

from longtalk.errors import HttpError
from longtalk.settings import Settings
from longtalk.stack import split_host_port

from ..auth import Keys

COOKIE = "lt_session"
SESSION_S = 12 * 3600


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Signed session cookies: `b64(json{name, exp, fp}).b64(hmac)`. `fp` fingerprints the
    key the session was opened with, so replacing a key ends its sessions."""

    def __init__(self, secret: bytes, keys: Keys) -> None:
        self.secret, self.keys = secret, keys

    def _sign(self, text: str) -> str:
        return b64(hmac.new(self.secret, text.encode(), hashlib.sha256).digest())

    def issue(self, name: str, now: float | None = None) -> str:
        exp = int((now or time.time()) + SESSION_S)
        payload = b64(json.dumps({"n": name, "e": exp, "f": self.keys.fingerprint(name)}).encode())
        return f"{payload}.{self._sign(payload)}"

    def owner(self, cookie: str | None) -> str | None:
        if not cookie or cookie.count(".") != 1:
            return None
        payload, sig = cookie.split(".")
        if not hmac.compare_digest(sig, self._sign(payload)):
            return None
        try:
            data = json.loads(unb64(payload))
            name, exp, fp = data["n"], int(data["e"]), data["f"]
        except (ValueError, KeyError, TypeError):
            return None
        if exp < time.time() or fp is None or fp != self.keys.fingerprint(name):
            return None
        return name

    def csrf(self, cookie: str) -> str:
        return self._sign("csrf:" + cookie)

    def csrf_ok(self, cookie: str | None, token: str | None) -> bool:
        return bool(cookie and token) and hmac.compare_digest(token, self.csrf(cookie))


class Access:
    """The key name behind a request (its API key, or its session cookie), and what it may
    see: its own renders, or every render for a name in LONGTALK_API_ADMIN_NAMES."""

    def __init__(self, settings: Settings, keys: Keys) -> None:
        self.keys = keys
        self.admins = {n.strip() for n in settings.api_admin_names.split(",") if n.strip()}
        host = split_host_port(settings.api_address)[0]
        self.loopback = host in ("localhost", "::1", "[::1]") or host.startswith("127.")
        # one secret per process unless configured: a restart logs everybody out, and API
        # replicas behind one address need LONGTALK_API_SESSION_SECRET
        secret = settings.api_session_secret.encode() or secrets.token_bytes(32)
        self.sessions = Sessions(secret, keys)

    def is_admin(self, name: str | None) -> bool:
        return name is not None and name in self.admins

    def scope(self, name: str) -> str | None:
        """The owner filter for `name`: None for an admin (everything)."""
        return None if self.is_admin(name) else name

    def viewer(self, request: Request) -> str | None:
        """The key name behind a dashboard request: its session cookie, or an API key header."""
        return self.keys.owner(request.headers.get("authorization")) or \
            self.sessions.owner(request.cookies.get(COOKIE))

    def need(self, request: Request) -> str:
        name = self.viewer(request)
        if name is None:
            raise HttpError(401, "unauthorized: log in, or send an API key as `Authorization: Bearer KEY`")
        return name

    def action_owner(self, request: Request) -> str | None:
        """For the /v2 routes: the session's key name when the cookie is valid AND the
        request carries its CSRF token (a page of this server sent it, not another site)."""
        cookie = request.cookies.get(COOKIE)
        name = self.sessions.owner(cookie)
        if name is None or not self.sessions.csrf_ok(cookie, request.headers.get("x-csrf-token")):
            return None
        return name
