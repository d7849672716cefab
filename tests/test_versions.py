"""The versioning policy's data holds: each supported release's row is what its stored
histories recorded, and `python -m longtalk.versions check` tells a running render's release."""

from __future__ import annotations

import asyncio
import json

import pytest

from longtalk import versions
from longtalk.testing import EXAMPLES
from tests.helpers import HISTORIES, RELEASES, manifest, patch_ids, stored, write_job


def test_the_stored_releases_are_the_supported_ones():
    supported = {r.name for r in versions.SUPPORTED} - {"current"}
    assert set(RELEASES) == supported, "tests/histories and longtalk.versions.SUPPORTED differ"
    assert not set(RELEASES) & set(versions.RETIRED)


@pytest.mark.parametrize("release", RELEASES)
def test_each_release_row_is_what_its_runs_recorded(release):
    row = next(r for r in versions.SUPPORTED if r.name == release)
    for entry, history in stored(release):
        recorded = patch_ids(history.events) - versions.MAYBE
        assert recorded == set(row.patches(entry["workflow_type"])), (entry["file"], recorded)
        assert versions.release_of(entry["workflow_type"], recorded) in (release, *(
            r.name for r in versions.SUPPORTED if r.patches(entry["workflow_type"]) == row.patches(entry["workflow_type"])))


def test_census_says_what_may_be_retired():
    current = next(r for r in versions.SUPPORTED if r.name == "current")
    runs = [("RenderVideo", set(current.render_video)),
            ("RenderChain", set(current.render_chain) | {"chain-cancel-v1"}),
            ("RenderVideo", {"activity-options-v2", "visibility-v1"}),
            ("RenderVideo", {"something-else"})]
    c = versions.census(runs)
    # the third run is of release 258bc8b, retired since: no supported release records its ids
    assert c.by_release == {("RenderVideo", "current"): 1, ("RenderChain", "current"): 1,
                            ("RenderVideo", "unknown"): 2}
    assert c.lacking["audio-beside-windows-v1"] == 2 and c.carrying["audio-beside-windows-v1"] == 1
    assert c.lacking["visibility-v1"] == 1  # the unknown one
    lines = versions.report(c)
    assert any("release this code does not support" in line for line in lines)


async def test_check_finds_a_running_render_of_this_code(workers, temporal_client, settings, backend, tmp_path,
                                                      render_id, monkeypatch):
    from tests.helpers import run_starter

    render = backend.render_window

    async def slow(job, progress=None):
        if job.render_id == render_id:
            await asyncio.sleep(2)
        return await render(job, progress)

    monkeypatch.setattr(backend, "render_window", slow)
    job = write_job(tmp_path, image_path=EXAMPLES / "portrait.png", wav_path=EXAMPLES / "speech.ogg",
                    width=64, height=64, max_frame=300)
    rc, _out, err = await run_starter(temporal_client, settings, job, "--id", render_id, "--no-wait")
    assert rc == 0, err
    try:
        for _ in range(100):
            runs = [r for r in await versions.running_runs(temporal_client)]
            mine = versions.census([r for r in runs])
            if mine.by_release.get(("RenderChain", "current")):
                break
            await asyncio.sleep(0.2)
        assert mine.by_release.get(("RenderVideo", "current"), 0) >= 1, (mine.by_release, runs)
        assert mine.by_release.get(("RenderChain", "current"), 0) >= 1, mine.by_release
    finally:
        await temporal_client.get_workflow_handle(render_id).cancel()
