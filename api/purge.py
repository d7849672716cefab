"""The activity of the PurgeQueue workflow (run by the API's worker): cancel the renders a
/purge-queue request found queued, a visibility page at a time.

It lists them VISIBILITY_SETTLE_S after the request at the earliest: a render started just
before the request may reach the visibility store a moment later.

Its place in the listing (the page token, and the count so far) is its heartbeat: a retry
after a lost worker goes on from the last page it finished (that page's cancels may be sent
twice: a second cancel request of a render is a no-op). The listing is keyset-paged by start
time, so renders that end meanwhile (no longer Running) do not shift it.
"""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime, timezone

from temporalio import activity

from workflows.purge import TIME_FORMAT, PurgeInput

from .service import Renders

CANCELS_AT_ONCE = 32
VISIBILITY_SETTLE_S = 2.0


class PurgeActivities:
    def __init__(self, renders: Renders) -> None:
        self.renders = renders

    @activity.defn(name="purge_queued")
    async def purge_queued(self, inp: PurgeInput) -> int:
        details = activity.info().heartbeat_details
        place = details[0] if details else {"token": None, "cancelled": 0}
        token = base64.b64decode(place["token"]) if place["token"] else None
        cancelled = place["cancelled"]
        gate = asyncio.Semaphore(CANCELS_AT_ONCE)

        async def one(w) -> int:
            async with gate:
                return await self.renders.cancel_if_queued(w)

        query = self.renders.queued_query(inp.owner, inp.started_before)
        asked = datetime.strptime(inp.started_before, TIME_FORMAT).replace(tzinfo=timezone.utc)
        await asyncio.sleep(max(0.0, VISIBILITY_SETTLE_S - (datetime.now(timezone.utc) - asked).total_seconds()))
        while True:
            activity.heartbeat(place)
            page = self.renders.client.list_workflows(query, page_size=inp.page_size, next_page_token=token)
            await page.fetch_next_page()
            cancelled += sum(await asyncio.gather(*(one(w) for w in page.current_page or [])))
            token = page.next_page_token
            place = {"token": base64.b64encode(token).decode() if token else None, "cancelled": cancelled}
            activity.heartbeat(place)
            if token is None:
                activity.logger.info("purge of %s: %d renders cancelled", inp.owner, cancelled)
                return cancelled

