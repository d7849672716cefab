"""A render's inputs, from the job a user sends to the objects the workflow reads.

One home per concern:

    job.py        the job contract (the RunPod fields, our seed) -> Job; the render-id rule
    sources.py    where bytes come from: paths (confined to LONGTALK_INPUT_ROOTS unless given
                  on the command line), base64 (decoded once, streamed), URLs (longtalk.netguard)
    formats.py    what the bytes are: sniffed once per input; what each field accepts
    preflight.py  decode checks, given the format already sniffed
    staging.py    prepare (read, sniff, check) and store: the client's inputs, and the URL
                  inputs the ingest activity downloads
    submit.py     parse -> stage -> start, for the CLI and an HTTP API alike

The CLI (starter.py) and a server call the same three steps:

    job = parse_job(obj, settings)
    submission = await submit(client, settings, job, render_id, backend)   # stages, then starts
"""

from .job import (
    MEDIA_KEYS, RENDER_ID, RENDER_ID_MAX, RENDER_ID_RULE, SCALAR_KEYS, Job, check_render_id, is_render_id,
    load_job_file, parse_job,
)
from .sources import MediaSource, open_source
from .staging import StagedInput, fetch_url_input, stage_inputs, stored_input_key
from .submit import Submission, existing_status, render_request, submit
from .submit import start as start_render

__all__ = [
    "MEDIA_KEYS", "RENDER_ID", "RENDER_ID_MAX", "RENDER_ID_RULE", "SCALAR_KEYS", "Job", "MediaSource",
    "StagedInput", "Submission", "check_render_id", "existing_status", "fetch_url_input", "is_render_id", "load_job_file",
    "open_source", "parse_job", "render_request", "stage_inputs", "start_render", "stored_input_key", "submit",
]
