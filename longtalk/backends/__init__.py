"""Render backends by name. `preview` runs anywhere; `timed` is the preview plus a fixed time
per window (a GPU stand-in for benchmarks); `comfyui` needs a ComfyUI server."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..settings import Settings
from .base import RenderBackend, WindowJob

if TYPE_CHECKING:
    from ..comfy.config import GraphConfig

BACKENDS = ("preview", "timed", "comfyui")


def make_backends(settings: Settings, graph_config: "GraphConfig | None" = None) -> dict[str, RenderBackend]:
    """The backends a GPU worker serves: always the preview, plus the configured one. The
    comfyui backend needs the graph config the composition root read (GraphConfig.from_env)."""
    from .preview import PreviewBackend

    backends: dict[str, RenderBackend] = {"preview": PreviewBackend()}
    if settings.backend == "comfyui":
        from .comfyui import ComfyUIBackend  # the real backend (ComfyUI + InfiniteTalk)

        if graph_config is None:
            raise ValueError("the comfyui backend needs a GraphConfig (read by the composition root)")
        backends["comfyui"] = ComfyUIBackend.from_settings(settings, graph_config)
    elif settings.backend == "timed":
        from .timed import TimedBackend

        backends["timed"] = TimedBackend(settings.timed_window_s)
    elif settings.backend not in BACKENDS:
        raise ValueError(f"LONGTALK_BACKEND: unknown backend {settings.backend!r}; choose one of {BACKENDS}")
    if settings.preview_faults:  # LONGTALK_PREVIEW_FAULTS: the preview (and timed) spoil windows on purpose
        from .faulty import FaultSpec, FaultyBackend

        spec = FaultSpec.parse(settings.preview_faults)
        for name in ("preview", "timed"):
            if name in backends:
                backends[name] = FaultyBackend(backends[name], spec)
    return backends


__all__ = ["BACKENDS", "RenderBackend", "WindowJob", "make_backends"]
