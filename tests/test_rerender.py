"""Re-rendering windows k..m of a finished render: a new output version with exactly T
frames, the base render and its output untouched, only windows k..(end of m's chain)
rendered again, through starter.py and the HTTP API."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from longtalk import av_io, visibility as vis
from longtalk.payloads import derived_keys, output_key, window_meta_key
from tests.helpers import check_video, run_starter, write_job

pytestmark = pytest.mark.timeout(300)


async def _finished(temporal_client, settings, media, tmp_path, render_id, **extra):
    job = write_job(tmp_path, image_path=media["portrait"], wav_path=media["speech"], width=96, height=96, **extra)
    rc, result, err = await run_starter(temporal_client, settings, job, "--id", render_id)
    assert rc == 0, err
    return result


async def test_rerender_two_windows_through_starter(workers, temporal_client, settings, store, backend, media,
                                                    tmp_path, render_id):
    base = await _finished(temporal_client, settings, media, tmp_path, render_id,
                           name="Episode 12", labels=["team-a", "lang:en"])
    n, total = base["windows"], base["frames"]
    assert n >= 3
    base_bytes = store.get_bytes(output_key(render_id))
    before = len([c for c in backend.calls if c[0] == render_id])
    out = tmp_path / "v2.mp4"
    rc, result, err = await run_starter(temporal_client, settings, "--rerender", render_id, "--windows", "1-1",
                                        "--prompt", "A person is talking, smiling", "--output", str(out))
    assert rc == 0, err
    new_id = f"{render_id}.v2"
    assert result["render_id"] == new_id and result["frames"] == total and result["rerendered"] == [1, n - 1]
    check_video(out, total, 96, 96)
    # one chain: window 1 and every later window were rendered again; window 0 was copied
    calls = [c for c in backend.calls if c[0] == new_id]
    assert sorted(c[1] for c in calls) == list(range(1, n)), calls
    assert len([c for c in backend.calls if c[0] == render_id]) == before
    assert store.get_json(window_meta_key(new_id, 0))["copied_from"] == render_id
    assert store.get_json(derived_keys(new_id)["plan"])["rerender"] == {"base": render_id, "first": 1, "last": n - 1}
    # the old version stays as it was
    assert store.get_bytes(output_key(render_id)) == base_bytes
    desc = await temporal_client.get_workflow_handle(new_id).describe()
    assert desc.typed_search_attributes.get(vis.BASE_KEY) == render_id
    assert "Re-render of" in (await desc.static_summary())
    # the new version keeps the base's name and labels, with its own prompt in the memo
    assert desc.typed_search_attributes.get(vis.NAME_KEY) == "Episode 12"
    assert desc.typed_search_attributes.get(vis.LABELS_KEY) == ["team-a", "lang:en"]
    memo = await desc.memo()
    assert (memo["name"], memo["labels"], memo["prompt"]) == ("Episode 12", ["team-a", "lang:en"],
                                                             "A person is talking, smiling")
    # window 0 of the new version is the base's window 0, frame for frame
    a = av_io.read_frames(out, [0, 5])
    b_path = tmp_path / "base.mp4"
    b_path.write_bytes(base_bytes)
    b = av_io.read_frames(b_path, [0, 5])
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[5], b[5])

    # a second re-render is version 3, from the first render's id
    rc, result3, err = await run_starter(temporal_client, settings, "--rerender", new_id, "--windows", str(n - 1))
    assert rc == 0, err
    assert result3["render_id"] == f"{render_id}.v3" and result3["frames"] == total


async def test_rerender_refusals(workers, temporal_client, settings, media, tmp_path, render_id):
    base = await _finished(temporal_client, settings, media, tmp_path, render_id)
    n = base["windows"]
    for windows, field in ((f"{n}", "from"), (f"1-{n}", "to"), ("2-1", "to"), ("x", "from")):
        rc, _, err = await run_starter(temporal_client, settings, "--rerender", render_id, "--windows", windows)
        assert rc == 2 and f"error: {field}:" in err, (windows, err)
    rc, _, err = await run_starter(temporal_client, settings, "--rerender", "no-such-render", "--windows", "0")
    assert rc == 2 and "not found" in err
    rc, _, err = await run_starter(temporal_client, settings, "--rerender", render_id, "--windows", "0",
                                   "--seed", "-1")
    assert rc == 2 and "error: seed:" in err
