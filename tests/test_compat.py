"""Payload compatibility across releases: every payload the previous release put into Temporal
(the stored histories, tests/histories/<release>/) decodes into the dataclasses of this
checkout, with its values intact, and a payload of this checkout carries every key and value
the old one had, so a worker still running the previous release reads it too. Both through
the project's data converter (longtalk.converter), the one every client and worker uses.

A render started by the old code has its next activities executed by new workers and its
workflows continued by the new workflow code (tests/test_replay.py replays the commands);
this checks the data: workflow inputs (started, continue-as-new, child workflows), activity
inputs and results, signals and workflow results.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter

from longtalk import activity_options
from longtalk.converter import DATA_CONVERTER
from longtalk.payloads import (
    ActivityTimeouts, CancelledInput, Chain, ChainInput, ChainResult, DiscardInput, EncodeAudioInput, GpuStarted,
    IngestResult, Plan, PlanInput,
    PublishInput, RenderContext, RenderRequest, RenderResult, RenderSpec, RenderWindowInput, RenderWindowResult,
    StitchInput, StitchResult, WindowsDone,
)
from longtalk.settings import Settings
from tests.helpers import RELEASES, stored
from workflows.purge import PurgeInput

CONVERTER = DATA_CONVERTER.payload_converter

WORKFLOW_INPUTS = {"RenderVideo": RenderRequest, "RenderChain": ChainInput, "PurgeQueue": PurgeInput}
WORKFLOW_RESULTS = {"RenderVideo": RenderResult, "RenderChain": ChainResult, "PurgeQueue": int}
ACTIVITY_INPUTS = {"ingest": RenderRequest, "plan": PlanInput, "render_window": RenderWindowInput,
                   "stitch": StitchInput, "publish": PublishInput, "discard": DiscardInput,
                   "record_cancelled": CancelledInput, "encode_audio": EncodeAudioInput,
                   "purge_queued": PurgeInput}
ACTIVITY_RESULTS = {"ingest": IngestResult, "plan": Plan, "render_window": RenderWindowResult,
                    "stitch": StitchResult, "publish": RenderResult, "discard": int, "record_cancelled": type(None),
                    "encode_audio": type(None), "purge_queued": int}
SIGNALS = {"windows_done": WindowsDone, "gpu_started": GpuStarted}


def old_payloads(release: str) -> list[tuple[str, type, object]]:
    """(where, the class it must decode into, the payload) for every payload of a release."""
    out = []
    for entry, history in stored(release):
        wf_type = entry["workflow_type"]
        scheduled: dict[int, str] = {}
        for event in history.events:
            where = f"{entry['file']}#{event.event_id}"
            t = event.event_type
            if t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                a = event.workflow_execution_started_event_attributes
                assert a.workflow_type.name == wf_type
                out += [(where, WORKFLOW_INPUTS[wf_type], p) for p in a.input.payloads]
            elif t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
                a = event.workflow_execution_continued_as_new_event_attributes
                out += [(where, WORKFLOW_INPUTS[a.workflow_type.name], p) for p in a.input.payloads]
            elif t == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
                a = event.start_child_workflow_execution_initiated_event_attributes
                out += [(where, WORKFLOW_INPUTS[a.workflow_type.name], p) for p in a.input.payloads]
            elif t == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                a = event.activity_task_scheduled_event_attributes
                scheduled[event.event_id] = a.activity_type.name
                out += [(where, ACTIVITY_INPUTS[a.activity_type.name], p) for p in a.input.payloads]
            elif t == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                a = event.activity_task_completed_event_attributes
                name = scheduled[a.scheduled_event_id]
                out += [(where, ACTIVITY_RESULTS[name], p) for p in a.result.payloads]
            elif t == EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED:
                a = event.signal_external_workflow_execution_initiated_event_attributes
                out += [(where, SIGNALS[a.signal_name], p) for p in a.input.payloads]
            elif t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
                a = event.workflow_execution_signaled_event_attributes
                out += [(where, SIGNALS[a.signal_name], p) for p in a.input.payloads]
            elif t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
                a = event.workflow_execution_completed_event_attributes
                out += [(where, WORKFLOW_RESULTS[wf_type], p) for p in a.result.payloads]
    return out


def contained(old, new, path: str = "") -> list[str]:
    """Where `new` (JSON) lacks a key of `old` or holds another value: [] when every old key
    and value survived (new keys are fine: the old dataclasses ignore them)."""
    if isinstance(old, dict):
        if not isinstance(new, dict):
            return [f"{path or '.'}: {old!r} became {new!r}"]
        problems = []
        for key, value in old.items():
            if key not in new:
                problems.append(f"{path}.{key}: missing")
            else:
                problems += contained(value, new[key], f"{path}.{key}")
        return problems
    if isinstance(old, list):
        if not isinstance(new, list) or len(old) != len(new):
            return [f"{path}: {old!r} became {new!r}"]
        return [p for i, (o, n) in enumerate(zip(old, new)) for p in contained(o, n, f"{path}[{i}]")]
    return [] if old == new and type(old) is type(new) else [f"{path}: {old!r} became {new!r}"]


def spec_matches_flat(value, raw: dict, where: str) -> None:
    """The spec built from an old payload holds the values its flat fields had."""
    if isinstance(value, (RenderRequest, RenderContext, StitchInput)):
        # a release since RenderSpec stores the spec (and its flat copies); de3015c only flat fields
        source = raw["spec"] if "spec" in raw else raw
        for key in dataclasses.fields(RenderSpec):
            if key.name in source:
                assert getattr(value.spec, key.name) == source[key.name], (where, key.name)
        if isinstance(value, RenderContext):
            assert value.spec.multi == (len(raw["audio_keys"]) > 1), where
    if isinstance(value, (RenderRequest, ChainInput)):
        assert value.timeouts.heartbeat_s == raw["heartbeat_timeout_s"], where
    for f in dataclasses.fields(value) if dataclasses.is_dataclass(value) else ():
        inner = getattr(value, f.name)
        if dataclasses.is_dataclass(inner) and isinstance(raw.get(f.name), dict):
            spec_matches_flat(inner, raw[f.name], f"{where}.{f.name}")


@pytest.mark.parametrize("release", RELEASES)
def test_every_stored_payload_decodes_into_the_current_dataclasses(release):
    payloads = old_payloads(release)
    kinds = {cls for _, cls, _ in payloads}
    # the stored shapes exercise every contract that crosses Temporal
    assert {RenderRequest, ChainInput, PlanInput, RenderWindowInput, StitchInput, PublishInput, DiscardInput,
            CancelledInput, IngestResult, Plan, RenderWindowResult, StitchResult, RenderResult, WindowsDone,
            ChainResult} <= kinds, kinds
    problems = []
    for where, cls, payload in payloads:
        raw = json.loads(payload.data) if payload.data else None
        value = CONVERTER.from_payloads([payload], [cls])[0]
        if cls is type(None):
            assert value is None, where
            continue
        if not dataclasses.is_dataclass(cls):
            assert value == raw and isinstance(value, cls), where
            continue
        assert isinstance(value, cls), where
        spec_matches_flat(value, raw, where)
        # encoded again by this code: every old key and value is still there (old workers read it)
        again = json.loads(CONVERTER.to_payloads([value])[0].data)
        problems += [f"{where} ({cls.__name__}) {p}" for p in contained(raw, again)]
        # and it decodes to the same value
        assert CONVERTER.from_payloads(CONVERTER.to_payloads([value]), [cls])[0] == value, where
    assert not problems, "\n".join(problems[:20])


def test_a_new_payload_keeps_the_flat_fields_of_the_spec():
    """What a worker of the previous release reads from this code's payloads: the flat copies."""
    spec = RenderSpec(input_type="video", person_count="multi", prompt="two", width=640, height=384,
                      max_frame=300, force_offload=False, network_volume=True, seed=12345, window=17, motion=5, fps=25)
    req = RenderRequest(render_id="r", inputs={"audio": "k"}, spec=spec,
                        timeouts=ActivityTimeouts(heartbeat_s=7, window_s=100, schedule_to_close_s=9000))
    raw = json.loads(CONVERTER.to_payloads([req])[0].data)
    # the fields that release read flat (a field added since has none: that release never reads it)
    old_fields = ("input_type", "person_count", "prompt", "width", "height", "max_frame", "force_offload",
                  "network_volume", "window", "motion", "fps", "seed")
    assert {k: raw[k] for k in old_fields} == {k: getattr(spec, k) for k in old_fields}
    assert raw["heartbeat_timeout_s"] == 7
    ctx = RenderContext(render_id="r", backend="comfyui", total_frames=40, reference_key="ref",
                        audio_keys=["a1", "a2"], spec=spec)
    raw = json.loads(CONVERTER.to_payloads([ctx])[0].data)
    assert (raw["width"], raw["seed"], raw["motion"], raw["input_type"]) == (640, 12345, 5, "video")
    # continue-as-new keeps everything but the next window
    chain = ChainInput(context=ctx, chain=Chain(index=0, first=0, last=9), next_window=0, parent_id="r",
                       timeouts=req.timeouts)
    moved = dataclasses.replace(chain, next_window=4)
    assert moved.next_window == 4 and moved.context == ctx and moved.timeouts == req.timeouts
    raw = json.loads(CONVERTER.to_payloads([RenderWindowInput(context=moved.context, index=4, chain_first=0)])[0].data)
    assert raw["context"]["seed"] == 12345  # a nested payload carries its flat copies too
    raw = json.loads(CONVERTER.to_payloads([moved])[0].data)
    assert raw["heartbeat_timeout_s"] == 7 and raw["context"]["width"] == 640
    # what replaces a spec replaces its flat copies
    raw = json.loads(CONVERTER.to_payloads([dataclasses.replace(req, spec=RenderSpec(width=256))])[0].data)
    assert raw["width"] == raw["spec"]["width"] == 256


def payload(value: dict) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode())


def test_a_spec_given_wins_over_flat_fields():
    """Every release since RenderSpec wrote both: the spec is what counts."""
    raw = {"render_id": "r", "inputs": {}, "spec": dataclasses.asdict(RenderSpec(width=1024)), "width": 64,
           "timeouts": dataclasses.asdict(ActivityTimeouts(heartbeat_s=9)), "heartbeat_timeout_s": 60}
    req = CONVERTER.from_payloads([payload(raw)], [RenderRequest])[0]
    assert req.spec.width == 1024 and req.timeouts.heartbeat_s == 9


def test_an_old_payload_without_the_project_converter_is_refused_not_guessed():
    """A de3015c payload read by Temporal's default converter would need the parameters it does
    not know where to find: it fails, instead of rendering with default parameters."""
    raw = {"render_id": "r", "backend": "preview", "input_type": "image", "width": 64, "height": 64, "prompt": "p",
           "seed": 2, "force_offload": True, "window": 17, "motion": 9, "fps": 25, "total_frames": 17,
           "reference_key": "k", "audio_keys": ["a"]}
    with pytest.raises(Exception):
        DataConverter.default.payload_converter.from_payloads([payload(raw)], [RenderContext])
    ctx = CONVERTER.from_payloads([payload(raw)], [RenderContext])[0]
    assert ctx.spec == RenderSpec(prompt="p", width=64, height=64, window=17, motion=9)


def test_default_timeouts_are_the_default_settings():
    # except chain affinity: a payload without it (a render in flight across the upgrade) keeps
    # its windows on the shared GPU queue, as the release that started it did
    assert ActivityTimeouts().affinity_s == 0
    assert activity_options.timeouts_from_settings(Settings()) == dataclasses.replace(
        ActivityTimeouts(), affinity_s=Settings().affinity_wait_s)
    t = activity_options.timeouts_from_settings(Settings(comfy_prompt_timeout_s=7200.5, heartbeat_timeout_s=9))
    assert t.window_s == 7201 + activity_options.WINDOW_MARGIN_S and t.heartbeat_s == 9
    with pytest.raises(ValueError, match="LONGTALK_ACTIVITY_SCHEDULE_TO_CLOSE_S"):
        activity_options.timeouts_from_settings(Settings(activity_schedule_to_close_s=600))
