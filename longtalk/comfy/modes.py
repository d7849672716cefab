"""The graph modes: one ComfyUI graph per kind of job (picture or video in, one or two speakers).

A render's mode follows from its RenderSpec (`mode_for`); the graph config (which modes a
deployment serves) and the binder (which graph a window is bound into) both name modes, so
they live here, below both.
"""

from __future__ import annotations

from ..spec import RenderSpec

# mode -> (RenderSpec.input_type, RenderSpec.person_count)
KINDS: dict[str, tuple[str, str]] = {
    "i2v_single": ("image", "single"),
    "i2v_multi": ("image", "multi"),
    "v2v_single": ("video", "single"),
    "v2v_multi": ("video", "multi"),
}
MODES = tuple(KINDS)


def check_mode(mode: str) -> None:
    if mode not in KINDS:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def mode_for(spec: RenderSpec) -> str:
    """The graph of a render: an image and one speaker -> "i2v_single", a video and two -> "v2v_multi"."""
    for mode, kind in KINDS.items():
        if kind == (spec.input_type, spec.person_count):
            return mode
    raise ValueError(f"no graph renders input_type {spec.input_type!r} with person_count {spec.person_count!r}: "
                     f"input_type is image or video, person_count single or multi")


def spec_for(mode: str, **params) -> RenderSpec:
    """A RenderSpec of `mode` (the other parameters from `params`, else the defaults): what the
    checks that bind a mode's graph without a job render."""
    check_mode(mode)
    input_type, person_count = KINDS[mode]
    return RenderSpec(input_type=input_type, person_count=person_count, **params)


def parse_modes(text: str, what: str = "modes") -> tuple[str, ...]:
    """"i2v_single, v2v_single" -> ("i2v_single", "v2v_single"); "all" -> every mode."""
    names = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    if names == ("all",):
        return MODES
    bad = [m for m in names if m not in KINDS]
    if bad or not names:
        raise ValueError(f"{what}: use a comma-separated list of {', '.join(MODES)} (or all), got {text!r}")
    return names
