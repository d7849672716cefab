"""Logging in to the dashboard and out: an API key traded for a signed session cookie."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from longtalk.errors import HttpError

from ..context import Api, api_of
from ..dashboard import COOKIE, SESSION_S, login_page, safe_next
from .parse import form

log = logging.getLogger("longtalk.dashboard")

router = APIRouter(include_in_schema=False)


def logged_in(api: Api, name: str, target: str) -> RedirectResponse:
    resp = RedirectResponse(safe_next(target), status_code=303)
    resp.set_cookie(COOKIE, api.access.sessions.issue(name), max_age=SESSION_S, httponly=True,
                    samesite="strict", secure=not api.access.loopback, path="/")
    return resp


def same_origin(request: Request) -> bool:
    """A form POST from a page of this server (browsers send Origin on POST)."""
    origin = request.headers.get("origin")
    if origin is None:  # not a browser (or a very old one): SameSite and the key itself guard it
        return True
    return origin.split("://", 1)[-1] == request.headers.get("host", "")


@router.get("/login")
async def login_form(request: Request):
    api = api_of(request)
    key = request.query_params.get("key")
    if key is not None:
        # the embedded stack's printed link; only on loopback, where the link never
        # crosses a network. Redirect at once: the key leaves the address bar.
        name = api.keys.owner(key) if api.access.loopback else None
        if name is None:
            return login_page("That link does not log in here." if api.access.loopback else
                              "Links with a key only work when the API listens on loopback.", status=401)
        return logged_in(api, name, "/")
    if api.access.viewer(request):
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return login_page(next_=request.query_params.get("next", "/"))


@router.post("/login")
async def login(request: Request):
    api = api_of(request)
    fields = await form(request)
    if not same_origin(request):
        return login_page("Log in from this server's own page.", status=403)
    name = api.keys.owner(fields.get("key", ""))
    if name is None:
        await asyncio.sleep(0.5)  # slows down guessing; keys are 16+ random characters anyway
        return login_page("That key is not valid.", fields.get("next", "/"), status=401)
    log.info("dashboard login: %s", name)
    return logged_in(api, name, fields.get("next", "/"))


@router.post("/logout")
async def logout(request: Request):
    api = api_of(request)
    fields = await form(request)
    cookie = request.cookies.get(COOKIE)
    sessions = api.access.sessions
    if cookie and not sessions.csrf_ok(cookie, fields.get("csrf") or request.headers.get("x-csrf-token")):
        raise HttpError(403, "csrf: missing or wrong token")
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=not api.access.loopback)
    return resp
