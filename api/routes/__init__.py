"""The API's routes, one module per resource, each an APIRouter that create_app includes:

    renders.py    /v2/{endpoint}/run, runsync, status, status-sync, stream, cancel, retry
    rerender.py   /v2/{endpoint}/rerender/{id} (GET: which windows, POST: start)
    endpoint.py   /v2/{endpoint}/health, purge-queue
    session.py    /login, /logout (the dashboard's session cookie)
    dashboard.py  the dashboard's pages and the JSON, thumbnails and HLS they poll
    charts.py     the dashboard's charts (SVG)
    probes.py     /livez, /readyz (Kubernetes; no key)

A route reads the request (parse.py), asks api.context.Api (who is asking, the renders, the
read model) and answers; a refusal is an HttpError, turned into a response by api/errors.py.
"""

from . import charts, dashboard, endpoint, probes, renders, rerender, session

ROUTERS = (renders.router, rerender.router, endpoint.router, session.router, dashboard.router, charts.router, probes.router)
