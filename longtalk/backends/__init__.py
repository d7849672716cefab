"""Render backends by name. `preview` runs anywhere; `comfyui` needs a ComfyUI server."""

from __future__ import annotations

from ..settings import Settings
from .base import RenderBackend, WindowJob

BACKENDS = ("preview", "comfyui")


def make_backends(settings: Settings) -> dict[str, RenderBackend]:
    """The backends a GPU worker serves: always the preview, plus the configured one."""
    from .preview import PreviewBackend

    backends: dict[str, RenderBackend] = {"preview": PreviewBackend()}
    if settings.backend == "comfyui":
        from .comfyui import ComfyUIBackend  # the real backend (ComfyUI + InfiniteTalk)

        backends["comfyui"] = ComfyUIBackend.from_settings(settings)
    elif settings.backend not in BACKENDS:
        raise ValueError(f"LONGTALK_BACKEND: unknown backend {settings.backend!r}; choose one of {BACKENDS}")
    return backends


__all__ = ["BACKENDS", "RenderBackend", "WindowJob", "make_backends"]
