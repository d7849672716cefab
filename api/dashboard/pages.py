"""The dashboard's HTML: one shell per page (dashboard.js fills it from the JSON routes) and
the login form."""

from __future__ import annotations

import html

from fastapi.responses import HTMLResponse

HLS_JS = "vendor/hls.js-1.6.19/hls.min.js"
NAV = (("renders", "/", "Renders"), ("fleet", "/fleet", "Fleet"), ("new", "/new", "New render"))


def safe_next(target: str | None) -> str:
    """Only a path on this server (no //host, no scheme): no open redirect after login."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def page(name: str, admin: bool, csrf: str, endpoint: str, page: str, title: str, extra: str = "") -> HTMLResponse:
    """The shell of one page for the signed-in `name`; `csrf` goes with the page's actions."""
    nav = "".join(f'<a href="{href}"{" aria-current=page" if page == key else ""}>{label}</a>'
                  for key, href, label in NAV)
    badge = ' <span class="badge">admin</span>' if admin else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{csrf}">
<meta name="endpoint" content="{html.escape(endpoint)}">
<title>{html.escape(title)} · longtalk</title>
<link rel="stylesheet" href="/dashboard/static/dashboard.css">
<link rel="icon" href="/dashboard/static/favicon.svg" type="image/svg+xml">
</head><body data-page="{page}" {extra}>
<header class="top"><a class="brand" href="/">longtalk</a><nav>{nav}</nav>
<div class="who"><span title="signed in as">{html.escape(name)}</span>{badge}
<form method="post" action="/logout"><input type="hidden" name="csrf" value="{csrf}">
<button class="link" type="submit">Log out</button></form></div></header>
<main id="main"><p class="muted">Loading…</p></main>
<dialog id="confirm"></dialog>
{f'<script src="/dashboard/static/{HLS_JS}"></script>' if page == "render" else ""}
<script src="/dashboard/static/dashboard.js"></script>
{'<script src="/dashboard/static/new_render.js"></script>' if page == "new" else ""}
{'<script src="/dashboard/static/charts.js"></script>' if page in ("render", "fleet") else ""}
</body></html>"""
    return HTMLResponse(body, headers={"Cache-Control": "no-store"})


def login_page(error: str = "", next_: str = "/", status: int = 200) -> HTMLResponse:
    msg = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in · longtalk</title><link rel="stylesheet" href="/dashboard/static/dashboard.css">
<link rel="icon" href="/dashboard/static/favicon.svg" type="image/svg+xml"></head>
<body class="login"><main><form method="post" action="/login" class="card login-card">
<h1>longtalk</h1><p class="muted">Renders and GPUs. Log in with your API key.</p>{msg}
<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="current-password" required autofocus>
<input type="hidden" name="next" value="{html.escape(safe_next(next_))}">
<button type="submit" class="primary">Log in</button></form></main></body></html>"""
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
