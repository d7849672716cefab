"""The ops dashboard, served by the HTTP API at `/`: renders, one render, the GPU fleet.

    GET  /                  renders, newest first (filter by status, search by id)
    GET  /renders/{id}      one render: progress, window strip, live HLS preview, video, error
    GET  /fleet             GPU workers, queue depth, throughput, recent failures
    GET  /new               start a render: a form for the /run body, its estimate live (new_render.js)
    GET  /login, POST /login, POST /logout
    GET  /dashboard/api/... the JSON the pages poll (also with `Authorization: Bearer KEY`)
    GET  /dashboard/api/renders/{id}/charts/{name}.svg, /dashboard/api/fleet/charts/fleet.svg
                            the pages' charts (SVG, api/routes/charts.py; static/charts.js)

    sessions.py    who is asking: API keys, session cookies, CSRF tokens, admins (Access)
    read_model.py  what the JSON says: visibility lists and counts, one render, the fleet
    media.py       a window's details, thumbnails, the HLS preview's playlist and segments
    pages.py       the HTML shells and the login form
    charts.py      SVG charts (panels over a shared axis, bar pairs), pure
    chart_data.py  what the render and fleet pages' charts draw, from the bucket and fleet records

The routes are in api/routes/session.py (login, logout) and api/routes/dashboard.py.
"""

from .media import Media
from .pages import login_page, page, safe_next
from .read_model import PAGE_SIZE, SEARCH, STATUS_FILTERS, ReadModel
from .sessions import COOKIE, SESSION_S, Access, Sessions

__all__ = ["COOKIE", "PAGE_SIZE", "SEARCH", "SESSION_S", "STATUS_FILTERS", "Access", "Media", "ReadModel",
           "Sessions", "login_page", "page", "safe_next"]
