"""The dashboard's charts as SVG (api/dashboard/chart_data.py): the render page's and the fleet
page's, drawn at the width the page asks for (`?w=`, its card's width in px). The pages fetch
them again on their refresh tick when what they draw has changed (static/charts.js)."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from longtalk.errors import HttpError
from longtalk.fleet import read_fleet

from ..context import api_of
from ..dashboard.chart_data import FLEET_CHARTS, RENDER_CHARTS, fleet_chart as draw_fleet

router = APIRouter(include_in_schema=False)
SVG = "image/svg+xml"


def _width(request: Request) -> int | None:
    raw = request.query_params.get("w")
    if raw is None:
        return None
    if not raw.isdigit():
        raise HttpError(400, "w: the chart's width in px, a whole number")
    return int(raw)


@router.get("/dashboard/api/renders/{render_id}/charts/{name}.svg")
async def render_chart(render_id: str, name: str, request: Request):
    api = api_of(request)
    if name not in RENDER_CHARTS:
        raise HttpError(404, f"chart {name!r}: one of {', '.join(RENDER_CHARTS)}")
    width = _width(request)
    detail = await api.model.render_detail(render_id, api.access.need(request))
    svg = await asyncio.to_thread(api.charts.render_chart, name, detail, width)
    return Response(svg, media_type=SVG, headers={"Cache-Control": "no-store"})


@router.get("/dashboard/api/fleet/charts/{name}.svg")
async def fleet_chart(name: str, request: Request):
    api = api_of(request)
    api.access.need(request)
    if name not in FLEET_CHARTS:
        raise HttpError(404, f"chart {name!r}: one of {', '.join(FLEET_CHARTS)}")
    width = _width(request)
    records = await asyncio.to_thread(read_fleet, api.model.store)
    svg = draw_fleet(records, time.time(), width)
    return Response(svg, media_type=SVG, headers={"Cache-Control": "no-store"})
