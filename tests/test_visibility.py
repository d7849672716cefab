"""What Temporal shows of a render: search attributes kept current by the workflow, the
render's and chains' static summaries, the activities' summaries, the current details, and
the per-window details of the progress query (the dashboard's sources)."""

from __future__ import annotations

import asyncio
import json

import pytest
from temporalio.api.enums.v1 import EventType

from longtalk import visibility as vis
from longtalk.payloads import Progress
from tests.helpers import patch_ids, run_starter, write_job
from workflows.render import VISIBILITY_PATCH, WINDOW_SUMMARY_PATCH, RenderVideo, chain_workflow_id

pytestmark = pytest.mark.timeout(300)


def _progress_upserts(events) -> list:
    """Upserts of our attributes (patch markers upsert TemporalChangeVersion too)."""
    return [e for e in events if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
            and vis.STAGE in e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields]


async def test_a_render_reads_like_a_sentence(workers, temporal_client, settings, media, tmp_path, render_id):
    job = write_job(tmp_path, image_path=media["portrait"], wav_path=media["speech_mp3"], width=128, height=128,
                    person_count="multi", wav_path_2=media["speech_2"])
    rc, result, err = await run_starter(temporal_client, settings, job, "--id", render_id)
    assert rc == 0, err
    n = result["windows"]
    handle = temporal_client.get_workflow_handle(render_id)
    desc = await handle.describe()
    sa = desc.typed_search_attributes
    assert sa.get(vis.STAGE_KEY) == "done"
    assert sa.get(vis.WINDOWS_DONE_KEY) == n and sa.get(vis.WINDOWS_TOTAL_KEY) == n
    assert sa.get(vis.BACKEND_KEY) == "preview" and sa.get(vis.MODE_KEY) == "i2v-multi"
    assert sa.get(vis.BASE_KEY) == ""
    # the same through a visibility query (what the dashboard and /health run)
    found = [w.id async for w in temporal_client.list_workflows(
        f"WorkflowId = '{render_id}' AND {vis.STAGE} = 'done' AND {vis.MODE} = 'i2v-multi'")]
    assert found == [render_id]

    static = await desc.static_summary()
    assert static and "two speakers" in static and "128x128" in static, static
    events = (await handle.fetch_history()).events
    assert VISIBILITY_PATCH in patch_ids(events)
    upserts = _progress_upserts(events)
    # ingest, plan, waiting (for a GPU), render, stitch, publish, done, and a few progress upserts at most
    assert 7 <= len(upserts) <= 7 + n, len(upserts)
    summaries = {e.user_metadata.summary.data for e in events
                 if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED}
    assert any(b"stitch" in s for s in summaries) and any(b"publish" in s for s in summaries), summaries

    chain_events = (await temporal_client.get_workflow_handle(chain_workflow_id(render_id, 0)).fetch_history()).events
    assert WINDOW_SUMMARY_PATCH in patch_ids(chain_events)
    window_summaries = [json.loads(e.user_metadata.summary.data) for e in chain_events
                        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    assert window_summaries == [f"window {k + 1}/{n}" for k in range(n)]
    chain_desc = await temporal_client.get_workflow_handle(chain_workflow_id(render_id, 0)).describe()
    assert f"windows 1-{n} of {n}" in (await chain_desc.static_summary())

    progress = await handle.query(RenderVideo.progress, result_type=Progress)
    assert progress.chains == [[0, n - 1]]
    assert [d.index for d in progress.windows_detail] == list(range(n))
    assert all(d.attempt == 1 and d.worker.endswith("-gpu") and d.frames > 0 for d in progress.windows_detail)
    assert sum(d.frames for d in progress.windows_detail) == result["frames"]
    assert progress.latest_window == n - 1 and progress.rendering == []


async def test_progress_upserts_follow_the_window_count(workers, temporal_client, settings, media, tmp_path,
                                                       render_id):
    """Between stage changes, an upsert only when the finished windows pass the next multiple
    of the step (about 1% of the windows): never more than windows / step of them, and each
    one a new multiple. Workflow time plays no part (issue 16: a decision that read it could
    differ between the run and its replay)."""
    job = write_job(tmp_path, image_path=media["portrait"], wav_path=media["speech"], width=64, height=64)
    rc, result, err = await run_starter(temporal_client, settings, job, "--id", render_id)
    assert rc == 0, err
    n = result["windows"]
    step = vis.progress_step(n)
    events = (await temporal_client.get_workflow_handle(render_id).fetch_history()).events
    values = []
    for e in _progress_upserts(events):
        fields = e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
        values.append((json.loads(fields[vis.STAGE].data), json.loads(fields[vis.WINDOWS_DONE].data)))
    stages = [stage for stage, _ in values]
    assert stages[:4] == ["ingest", "plan", "waiting", "render"], stages
    progress = [(done, before) for (stage, done), (before_stage, before) in zip(values[1:], values)
                if stage == before_stage]  # the same stage again: a progress upsert
    assert progress, values
    assert len(progress) <= n // step, (values, step)
    assert all(done // step > before // step for done, before in progress), values


def test_progress_step_keeps_long_renders_far_from_once_per_window():
    assert vis.progress_step(17) == 1
    assert vis.progress_step(1250) == 12
    assert vis.mode_of("video", "single") == "v2v-single" and vis.mode_of("image", "multi") == "i2v-multi"


async def test_stage_is_upserted_while_running(workers, temporal_client, settings, media, tmp_path, render_id):
    """A running render is found by stage through visibility before it ends."""
    job = write_job(tmp_path, image_path=media["portrait"], wav_path=media["speech"], width=64, height=64)
    task = asyncio.create_task(run_starter(temporal_client, settings, job, "--id", render_id))
    seen = set()
    try:
        while not task.done():
            async for w in temporal_client.list_workflows(f"WorkflowId = '{render_id}'"):
                seen.add(w.typed_search_attributes.get(vis.STAGE_KEY))
            await asyncio.sleep(0.2)
        rc, _, err = await task
        assert rc == 0, err
    finally:
        task.cancel()
    assert seen & {"queued", "ingest", "plan", "render"}, seen


def test_every_attribute_kind_names_an_indexed_value_type():
    """register_search_attributes (servers other than the embedded dev server) maps each kind
    the dev server's --search-attribute flag takes to the API's enum."""
    from temporalio.api.enums.v1 import IndexedValueType

    names = {kind: vis.indexed_type_name(kind) for kind in set(vis.SEARCH_ATTRIBUTES.values())}
    assert names["KeywordList"] == "INDEXED_VALUE_TYPE_KEYWORD_LIST" and names["Int"] == "INDEXED_VALUE_TYPE_INT"
    for name in names.values():
        assert getattr(IndexedValueType, name) > 0
