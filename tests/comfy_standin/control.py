"""The tests' side of the stand-in's control endpoints (/standin/faults, /standin/stats, ...)."""

from __future__ import annotations

import aiohttp


async def control(server, path: str, body: dict | None = None) -> dict:
    """GET `path` (no body) or POST `body` as JSON to a stand-in; `server` has a `.url`."""
    async with aiohttp.ClientSession() as session:
        if body is None:
            async with session.get(server.url + path) as resp:
                return await resp.json()
        async with session.post(server.url + path, json=body) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()
