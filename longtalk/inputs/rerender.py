"""Re-rendering windows k..m of a finished render as a new output version.

Carry-over makes window j depend on window j-1, so a re-render redoes windows k..L, where L
is the last window of the chain that holds m (later chains start from the reference and do
not change). The new version is a render of its own, `<first render>.v<n>` (n = 2, 3, ...): its
plan is the base's plan, every window outside k..L is copied from the base (no GPU work),
window k starts from the base's window k-1 (its last M frames), and it publishes its own
output; the base render and its output stay as they were.

    preview = await rerender_preview(client, store, base, k, m)   # what would be redone
    handle, preview = await start_rerender(client, settings, store, base, k, m, prompt=..., seed=...)
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from ..errors import InputError
from ..payloads import RenderRequest, derived_keys
from ..settings import Settings
from ..spec import MAX_SEED
from ..store import ObjectStore
from .. import visibility as vis
from .job import RENDER_ID_MAX
from .submit import start
from .tags import tag_attributes, tag_memo

MAX_PROMPT = 4000


@dataclass
class RerenderPlan:
    base: str
    first: int  # k
    last: int  # L: the end of the chain that holds m
    requested_last: int  # m
    windows_total: int

    @property
    def windows(self) -> int:
        return self.last - self.first + 1

    def body(self) -> dict:
        return {"base": self.base, "first": self.first, "last": self.last, "requested_last": self.requested_last,
                "windows": self.windows, "windows_total": self.windows_total}


def _window_index(value, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value).strip())
        except ValueError:
            raise InputError(key, f"must be a window index (an integer from 0), got {value!r}") from None
    if value < 0:
        raise InputError(key, f"must be a window index (an integer from 0), got {value}")
    return value


async def _base_request(client: Client, base: str) -> tuple[RenderRequest, object]:
    try:
        desc = await client.get_workflow_handle(base).describe()
    except RPCError as exc:
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
            raise InputError("id", f"render {base} not found") from None
        raise
    if desc.status != WorkflowExecutionStatus.COMPLETED:
        state = desc.status.name.lower() if desc.status else "running"
        raise InputError("id", f"only a finished render can be re-rendered; {base} is {state}")
    history = await client.get_workflow_handle(base, run_id=desc.run_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    request = client.data_converter.payload_converter.from_payloads(started.input.payloads, [RenderRequest])[0]
    return request, desc


async def rerender_preview(client: Client, store: ObjectStore, base: str, first, last) -> RerenderPlan:
    """Which windows a re-render of `first`..`last` of `base` redoes (InputError naming the
    field when the range or the render does not allow it)."""
    k, m = _window_index(first, "from"), _window_index(last, "to")
    await _base_request(client, base)
    plan = await asyncio.to_thread(store.get_json_or_none, derived_keys(base)["plan"])
    if plan is None:
        raise InputError("id", f"render {base} has no stored plan (it was rendered by an older release or removed)")
    n = plan["windows"]
    if k >= n:
        raise InputError("from", f"render {base} has windows 0-{n - 1}, got {k}")
    if m >= n:
        raise InputError("to", f"render {base} has windows 0-{n - 1}, got {m}")
    if m < k:
        raise InputError("to", f"must be at least from ({k}), got {m}")
    chain_end = next(c["last"] for c in plan["chains"] if c["first"] <= m <= c["last"])
    return RerenderPlan(base=base, first=k, last=chain_end, requested_last=m, windows_total=n)


async def next_version_id(client: Client, base: str) -> str:
    """`<base>.v<n>`: one more than the versions visibility knows of (2 for the first)."""
    count = (await client.count_workflows(f"WorkflowType = 'RenderVideo' AND {vis.BASE} = '{base}'")).count
    n = count + 2
    while True:
        candidate = f"{base}.v{n}"
        if len(candidate) > RENDER_ID_MAX:
            raise InputError("id", f"render id {base} is too long to derive a version id from")
        try:
            await client.get_workflow_handle(candidate).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return candidate
            raise
        n += 1


async def start_rerender(client: Client, settings: Settings, store: ObjectStore, base: str, first, last, *,
                         prompt: str | None = None, seed=None,
                         search_attributes: TypedSearchAttributes | None = None,
                         memo: dict | None = None) -> tuple[WorkflowHandle, RerenderPlan, str]:
    """Start the new version; returns its handle, what it redoes and its render id."""
    preview = await rerender_preview(client, store, base, first, last)
    request, _desc = await _base_request(client, base)
    spec = request.spec
    if prompt is not None:
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError("prompt", "must be a non-empty string")
        if len(prompt) > MAX_PROMPT:
            raise InputError("prompt", f"must be at most {MAX_PROMPT} characters, got {len(prompt)}")
        spec = dataclasses.replace(spec, prompt=prompt)
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise InputError("seed", f"must be an integer from 0 to {MAX_SEED}, got {seed!r}")
        spec = dataclasses.replace(spec, seed=seed)
    # versions count from the first render: a re-render of base.v2 is base.v3
    root = _desc.typed_search_attributes.get(vis.BASE_KEY) or base
    render_id = await next_version_id(client, root)
    # the new version keeps the base's name and labels (how an operator finds it again) and
    # shows its own prompt in the dashboard's list
    base_memo = await _desc.memo()
    name, labels = base_memo.get("name"), base_memo.get("labels") or ()
    memo = {**tag_memo(name, labels, spec.prompt), **(memo or {})}
    pairs = [p for p in (search_attributes or TypedSearchAttributes.empty) if p.key.name != vis.BASE]
    given = {p.key.name for p in pairs}
    pairs += [p for p in tag_attributes(name, labels) if p.key.name not in given]
    search_attributes = TypedSearchAttributes([*pairs, SearchAttributePair(vis.BASE_KEY, root)])
    new = dataclasses.replace(request, render_id=render_id, spec=spec, base=base,
                              rerender_first=preview.first, rerender_last=preview.last)
    await asyncio.to_thread(store.put_json, derived_keys(render_id)["request"],
                            {"params": spec.params(), "base": base, "rerender": preview.body(),
                             "inputs": new.inputs, "input_urls": new.input_urls, "warnings": new.warnings})
    handle = await start(client, settings, new, search_attributes=search_attributes, memo=memo)
    return handle, preview, render_id
