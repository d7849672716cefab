"""What every route of one app shares: its settings and keys, who may see what (Access), the
renders (Temporal and the bucket, connected when the app starts) and the dashboard's read
model. create_app makes one and keeps it in `app.state.api`; a route reaches it with `api_of`."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from longtalk.errors import HttpError
from longtalk.settings import Settings

from .auth import Keys
from .dashboard import Access, Media, ReadModel
from .dashboard.chart_data import Charts
from .service import Renders


@dataclass
class Api:
    settings: Settings
    keys: Keys
    access: Access
    model: ReadModel
    media: Media
    endpoint_ids: set[str]
    charts: Charts | None = None  # the dashboard's charts (set by from_settings)

    @classmethod
    def from_settings(cls, settings: Settings, keys: Keys) -> "Api":
        access = Access(settings, keys)
        model = ReadModel(settings, access)
        return cls(settings, keys, access, model, Media(model),
                   {e.strip() for e in settings.api_endpoint_ids.split(",") if e.strip()}, charts=Charts(model))

    @property
    def renders(self) -> Renders:
        return self.model.renders

    def owner_of(self, request: Request, endpoint_id: str, public: bool = False) -> str | None:
        """The key name behind a /v2 request (its API key, or a dashboard session with its
        CSRF token); 401 without one unless the route is `public`."""
        if self.endpoint_ids and endpoint_id not in self.endpoint_ids:
            raise HttpError(404, f"endpoint {endpoint_id} not found")
        owner = self.keys.owner(request.headers.get("authorization"))
        if owner is None:  # the dashboard's pages: a session cookie with its CSRF token
            owner = self.access.action_owner(request)
        if owner is None and not public:
            raise HttpError(401, "unauthorized: send an API key as `Authorization: Bearer KEY`")
        return owner

    async def owned(self, render_id: str, owner: str):
        """The render's description, if `owner` may see it (an admin sees every render)."""
        return await self.model.describe(render_id, owner)


def api_of(request: Request) -> Api:
    return request.app.state.api
