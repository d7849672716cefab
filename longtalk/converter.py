"""The data converter of every Temporal client, worker and replayer of the project: Temporal's
default one (JSON for the dataclasses of longtalk.payloads), plus the payload shapes of
release de3015c.

Renders run for hours and workers are upgraded under them, so what that release wrote is
still read, and what this one writes is still read by a worker of that release until it is
replaced. Release de3015c copied the render's parameters field by field (`input_type`,
`width`, ..., `seed`) where `spec` now holds one `RenderSpec`, and knew the activity time
limits only as `heartbeat_timeout_s` where `timeouts` now holds them all. Here, and only here:

- reading: a payload without `spec` (or `timeouts`) gets it from those flat fields;
- writing: a payload of those classes carries the flat fields too, copied from `spec` and
  `timeouts` (the later releases read `spec` and `timeouts` where they are present).

`temporal_connect.connect` gives it to every client (and so to every worker); the replay
tests and tests/test_compat.py decode the stored histories with it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from temporalio.converter import (
    AdvancedJSONEncoder, CompositePayloadConverter, DataConverter, DefaultPayloadConverter, JSONPlainPayloadConverter,
    JSONTypeConverter, value_to_type,
)

from .payloads import ChainInput, RenderContext, RenderRequest, StitchInput

# the RenderSpec fields that release de3015c carried flat, in each class that carries `spec`
FLAT_SPEC: dict[type, tuple[str, ...]] = {
    RenderRequest: ("input_type", "person_count", "prompt", "width", "height", "max_frame", "force_offload",
                    "network_volume", "window", "motion", "fps", "seed"),
    RenderContext: ("input_type", "width", "height", "prompt", "seed", "force_offload", "window", "motion", "fps"),
    StitchInput: ("fps",),
}
# the classes in which release de3015c carried ActivityTimeouts.heartbeat_s as heartbeat_timeout_s
FLAT_HEARTBEAT: tuple[type, ...] = (RenderRequest, ChainInput)


def current_shape(cls: type, value: dict) -> dict | None:
    """A payload of release de3015c (decoded JSON) in this release's shape; None when it has
    that shape already."""
    new = dict(value)
    if cls in FLAT_SPEC and value.get("spec") is None:
        new["spec"] = {name: value[name] for name in FLAT_SPEC[cls] if value.get(name) is not None}
        if cls is RenderContext:  # it did not name the person count: one audio track per speaker says it
            new["spec"]["person_count"] = "multi" if len(value.get("audio_keys") or ()) > 1 else "single"
    if cls in FLAT_HEARTBEAT and value.get("timeouts") is None:
        new["timeouts"] = {"heartbeat_s": value["heartbeat_timeout_s"]} if "heartbeat_timeout_s" in value else {}
    return None if new == value else new


def flat_copies(obj: Any) -> dict:
    """What a worker of release de3015c reads from `obj` besides its fields."""
    cls = type(obj)
    out = {name: getattr(obj.spec, name) for name in FLAT_SPEC.get(cls, ())}
    if cls in FLAT_HEARTBEAT:
        out["heartbeat_timeout_s"] = obj.timeouts.heartbeat_s
    return out


class _OldShapes(JSONTypeConverter):
    """Decoding: brings a payload of an old shape into this release's before it is read."""

    def to_typed_value(self, hint: type, value: Any) -> Any:
        if isinstance(hint, type) and (hint in FLAT_SPEC or hint in FLAT_HEARTBEAT) and isinstance(value, dict):
            new = current_shape(hint, value)
            if new is not None:
                return value_to_type(hint, new, [self])
        return JSONTypeConverter.Unhandled


class _Encoder(AdvancedJSONEncoder):
    """Encoding: a dataclass as its fields (each nested one through here again), plus the flat
    copies of the classes that have them."""

    def default(self, o: Any) -> Any:
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return {**{f.name: getattr(o, f.name) for f in dataclasses.fields(o)}, **flat_copies(o)}
        return super().default(o)


class PayloadConverter(CompositePayloadConverter):
    """Temporal's default payload converters, with the JSON one reading and writing the old shapes."""

    def __init__(self) -> None:
        json = JSONPlainPayloadConverter(encoder=_Encoder, custom_type_converters=[_OldShapes()])
        super().__init__(*(json if isinstance(c, JSONPlainPayloadConverter) else c
                           for c in DefaultPayloadConverter.default_encoding_payload_converters))


DATA_CONVERTER = dataclasses.replace(DataConverter.default, payload_converter_class=PayloadConverter)
