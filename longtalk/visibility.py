"""The custom search attributes renders carry in Temporal visibility (registered by the
embedded stack's dev server at start, by the worker and by the HTTP API on any other server).
Mind the SQL visibility store's limits per type (the dev server's: 3 Int, 10 Keyword).

The client sets owner, stage (queued), backend and mode when it starts a render; the
RenderVideo workflow keeps stage and the window counts current (at stage changes, and each time
the finished windows pass the next multiple of about 1% of the windows; runs of releases before
progress-by-count-v1 also waited PROGRESS_UPSERT_S), so the dashboard and /health list and count
renders with visibility queries alone.
"""

OWNER = "LongtalkOwner"  # Keyword: the name of the API key that submitted the render
RETRIES = "LongtalkRetries"  # Int: how often the render was retried through the API
STAGE = "LongtalkStage"  # Keyword: queued|ingest|plan|waiting|render|stitch|publish|done|failed|cancelled
WINDOWS_DONE = "LongtalkWindowsDone"  # Int: finished windows (as of the last upsert)
WINDOWS_TOTAL = "LongtalkWindowsTotal"  # Int: windows of the render (0 until planned)
BACKEND = "LongtalkBackend"  # Keyword: preview | comfy | timed ...
MODE = "LongtalkMode"  # Keyword: i2v-single | i2v-multi | v2v-single | v2v-multi
BASE = "LongtalkBase"  # Keyword: the render a re-render was derived from ("" for a first render)
NAME = "LongtalkName"  # Keyword: the job's optional name (longtalk.inputs.tags), set at start
LABELS = "LongtalkLabels"  # KeywordList: the job's optional labels, set at start

SEARCH_ATTRIBUTES = {OWNER: "Keyword", RETRIES: "Int", STAGE: "Keyword", WINDOWS_DONE: "Int",
                     WINDOWS_TOTAL: "Int", BACKEND: "Keyword", MODE: "Keyword",
                     BASE: "Keyword", NAME: "Keyword", LABELS: "KeywordList"}

import re  # noqa: E402

from temporalio.common import SearchAttributeKey  # noqa: E402 - pure data, safe in workflow code

OWNER_KEY = SearchAttributeKey.for_keyword(OWNER)
RETRIES_KEY = SearchAttributeKey.for_int(RETRIES)
STAGE_KEY = SearchAttributeKey.for_keyword(STAGE)
WINDOWS_DONE_KEY = SearchAttributeKey.for_int(WINDOWS_DONE)
WINDOWS_TOTAL_KEY = SearchAttributeKey.for_int(WINDOWS_TOTAL)
BACKEND_KEY = SearchAttributeKey.for_keyword(BACKEND)
MODE_KEY = SearchAttributeKey.for_keyword(MODE)
BASE_KEY = SearchAttributeKey.for_keyword(BASE)
NAME_KEY = SearchAttributeKey.for_keyword(NAME)
LABELS_KEY = SearchAttributeKey.for_keyword_list(LABELS)

PROGRESS_UPSERT_S = 5.0  # runs before progress-by-count-v1: at most this often while windows finish
# no GPU has begun a window yet: RunPod's IN_QUEUE ("waiting": planned, waiting for a GPU; runs of
# releases before it go from plan straight to "render", and count as in progress from there)
QUEUED_STAGES = ("queued", "ingest", "plan", "waiting")
QUEUED_WHERE = f"{STAGE} IN ({', '.join(repr(s) for s in QUEUED_STAGES)})"
IN_QUEUE, IN_PROGRESS, CANCELLED = "IN_QUEUE", "IN_PROGRESS", "CANCELLED"


def running_state(stage: str | None) -> str:
    """A running render's RunPod status from its stage attribute alone, so that /status, the
    dashboard's list and its counts (visibility queries) always agree. A run that has taken
    its cancel is CANCELLED while it records what it kept."""
    if stage == "cancelled":
        return CANCELLED
    return IN_QUEUE if stage is None or stage in QUEUED_STAGES else IN_PROGRESS


def mode_of(input_type: str, person_count: str) -> str:
    return f"{'v2v' if input_type == 'video' else 'i2v'}-{person_count}"


def progress_step(total: int) -> int:
    """Windows between two progress upserts: about 1% of the render (1 for short ones), so a
    1,250-window render upserts about a hundred times, not once per window."""
    return max(1, total // 100)


def indexed_type_name(kind: str) -> str:
    """The API's enum name of an attribute kind as the dev server's flag spells it:
    KeywordList -> INDEXED_VALUE_TYPE_KEYWORD_LIST."""
    return "INDEXED_VALUE_TYPE_" + re.sub(r"(?<=[a-z])(?=[A-Z])", "_", kind).upper()


async def register_search_attributes(client) -> None:
    """Add the attributes a server lacks (the embedded dev server has them from its start)."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest

    have = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace))
    missing = {name: getattr(IndexedValueType, indexed_type_name(kind))
               for name, kind in SEARCH_ATTRIBUTES.items() if name not in have.custom_attributes}
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing))
