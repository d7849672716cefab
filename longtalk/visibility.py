"""The custom search attributes renders carry in Temporal visibility (registered by the
embedded stack's dev server at start, by the worker and by the HTTP API on any other server).

The client sets owner, stage (queued), backend and mode when it starts a render; the
RenderVideo workflow keeps stage and the window counts current (at stage changes, and at most
every PROGRESS_UPSERT_S while windows finish, in steps of about 1% of the windows), so the
dashboard and /health list and count renders with visibility queries alone.
"""

OWNER = "LongtalkOwner"  # Keyword: the name of the API key that submitted the render
RETRIES = "LongtalkRetries"  # Int: how often the render was retried through the API
STAGE = "LongtalkStage"  # Keyword: queued|ingest|plan|render|stitch|publish|done|failed|cancelled
WINDOWS_DONE = "LongtalkWindowsDone"  # Int: finished windows (as of the last upsert)
WINDOWS_TOTAL = "LongtalkWindowsTotal"  # Int: windows of the render (0 until planned)
LAST_WINDOW = "LongtalkLastWindow"  # Int: the latest finished window's index (-1: none yet)
BACKEND = "LongtalkBackend"  # Keyword: preview | comfy | timed ...
MODE = "LongtalkMode"  # Keyword: i2v-single | i2v-multi | v2v-single | v2v-multi
BASE = "LongtalkBase"  # Keyword: the render a re-render was derived from ("" for a first render)

SEARCH_ATTRIBUTES = {OWNER: "Keyword", RETRIES: "Int", STAGE: "Keyword", WINDOWS_DONE: "Int",
                     WINDOWS_TOTAL: "Int", LAST_WINDOW: "Int", BACKEND: "Keyword", MODE: "Keyword",
                     BASE: "Keyword"}

PROGRESS_UPSERT_S = 5.0  # at most this often while windows finish
QUEUED_STAGES = ("queued", "ingest", "plan")  # no GPU work yet: RunPod's IN_QUEUE


def mode_of(input_type: str, person_count: str) -> str:
    return f"{'v2v' if input_type == 'video' else 'i2v'}-{person_count}"
