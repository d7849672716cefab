"""The dashboard's pages (HTML shells: /, /fleet, /renders/{id}) and the JSON, thumbnails and
HLS preview they poll under /dashboard/api/ (with a session cookie or an API key)."""

from __future__ import annotations

import asyncio
import html
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.routing import Mount

from longtalk.errors import HttpError
from longtalk.visibility import BASE_KEY

from ..context import api_of
from ..dashboard import COOKIE, PAGE_SIZE, SEARCH, STATUS_FILTERS, page

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False)


def shell(kind: str, title: str, extra=lambda request: ""):
    """The route of one page: its HTML shell for a viewer, the login form for anybody else."""
    async def handler(request: Request):
        api = api_of(request)
        name = api.access.viewer(request)
        if name is None:
            return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
        cookie = request.cookies.get(COOKIE)
        csrf = api.access.sessions.csrf(cookie) if cookie else ""
        return page(name, api.access.is_admin(name), csrf, api.model.endpoint, kind, title, extra(request))
    return handler


router.add_api_route("/", shell("renders", "Renders"), methods=["GET"])
router.add_api_route("/fleet", shell("fleet", "Fleet"), methods=["GET"])
router.add_api_route("/new", shell("new", "New render"), methods=["GET"])  # static/new_render.js
router.add_api_route("/renders/{render_id}", shell(
    "render", "Render", lambda req: f'data-render="{html.escape(req.path_params["render_id"])}"'), methods=["GET"])


@router.get("/favicon.ico")
async def favicon():  # what a browser asks for before it has read a page's <link rel=icon>
    return Response((STATIC / "favicon.svg").read_bytes(), media_type="image/svg+xml",
                    headers={"Cache-Control": "public, max-age=86400"})


@router.get("/dashboard/api/renders")
async def renders_json(request: Request):
    api = api_of(request)
    name = api.access.need(request)
    status = request.query_params.get("status", "")
    q = request.query_params.get("q", "").strip()
    if status and status not in STATUS_FILTERS:
        raise HttpError(400, f"status: one of {', '.join(STATUS_FILTERS)}")
    if q and not SEARCH.match(q):
        raise HttpError(400, "q: the beginning of a render id or name, or a label: 1-80 characters, "
                             "no quotes, backslashes or control characters")
    try:
        limit = min(max(int(request.query_params.get("limit", PAGE_SIZE)), 1), 200)
    except ValueError:
        raise HttpError(400, "limit: an integer") from None
    token = request.query_params.get("page_token") or None
    return await api.model.list_renders(name, status, q, token, limit)


@router.get("/dashboard/api/renders/{render_id}")
async def render_json(render_id: str, request: Request):
    api = api_of(request)
    return await api.model.render_detail(render_id, api.access.need(request))


@router.get("/dashboard/api/renders/{render_id}/windows/{k}")
async def window_json(render_id: str, k: int, request: Request):
    api = api_of(request)
    desc = await api.model.describe(render_id, api.access.need(request))
    base = desc.typed_search_attributes.get(BASE_KEY) or None
    return await asyncio.to_thread(api.media.window_detail, render_id, base, k)


@router.get("/dashboard/api/renders/{render_id}/thumb")
async def thumb(render_id: str, request: Request):
    api = api_of(request)
    data = await api.media.thumb(render_id, api.access.need(request), request.query_params.get("k"))
    if data is None:
        return Response(status_code=404)
    # a window's frames never change: the browser may keep it
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


@router.get("/dashboard/api/renders/{render_id}/hls/index.m3u8")
async def playlist(render_id: str, request: Request):
    api = api_of(request)
    text = await api.media.playlist(render_id, api.access.need(request))
    return Response(text, media_type="application/vnd.apple.mpegurl", headers={"Cache-Control": "no-store"})


@router.get("/dashboard/api/renders/{render_id}/hls/{k}.ts")
async def segment(render_id: str, k: int, request: Request):
    api = api_of(request)
    data = await api.media.segment(render_id, api.access.need(request), k)
    if data is None:
        raise HttpError(404, f"segment {k} is not ready")
    return Response(data, media_type="video/mp2t", headers={"Cache-Control": "private, max-age=86400"})


@router.get("/dashboard/api/fleet")
async def fleet_json(request: Request):
    api = api_of(request)
    return await api.model.fleet(api.access.need(request))


router.routes.append(Mount("/dashboard/static", app=StaticFiles(directory=STATIC), name="dashboard-static"))
