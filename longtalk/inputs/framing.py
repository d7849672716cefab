"""What the frame does to a picture of another shape, said before anything renders.

The render's frame is width x height (512x512 unless the job gives a size). A portrait or
source video of another shape is scaled to cover the frame and its centre is kept
(`av_io.fit_image`): whatever lies outside is cut. That is a render that differs from what
was given, so the submission says so, with the size that keeps the whole picture.
"""

from __future__ import annotations

import math

ASPECT_TOLERANCE = 0.02  # shapes closer than this (ratio of aspect ratios) count as the same
SIZE_STEP = 16  # the job's width and height are multiples of this


def _ratio(width: int, height: int) -> str:
    g = math.gcd(width, height)
    w, h = width // g, height // g
    return f"{w}:{h}" if max(w, h) <= 32 else f"{width / height:.2f}:1"


def whole_picture_size(src_w: int, src_h: int, area: int, lo: int, hi: int) -> tuple[int, int]:
    """A frame of the source's shape with about `area` pixels, both sides multiples of 16
    within [lo, hi]: the size that keeps the whole picture."""
    aspect = src_w / src_h
    width = math.sqrt(area * aspect)
    scale = min(1.0, hi / width, hi / (width / aspect))
    scale = max(scale, lo / width, lo / (width / aspect))
    width *= scale

    def snap(v: float) -> int:
        return int(min(hi, max(lo, round(v / SIZE_STEP) * SIZE_STEP)))

    return snap(width), snap(width / aspect)


def crop_notice(key: str, what: str, src_w: int, src_h: int, width: int, height: int,
                default_size: bool, lo: int = 64, hi: int = 1920) -> str | None:
    """The warning for a `what` ("portrait", "source video") of src_w x src_h given as job
    key `key` and rendered in a width x height frame; None when the shapes agree within 2%."""
    src, frame = src_w / src_h, width / height
    if abs(src / frame - 1) <= ASPECT_TOLERANCE:
        return None
    scale = max(width / src_w, height / src_h)  # cover the frame, keep the centre
    if src > frame:
        kept, total, unit, edges = width / scale, src_w, "columns", "left and right"
    else:
        kept, total, unit, edges = height / scale, src_h, "rows", "top and bottom"
    cut = total - round(kept)
    size_note = " (the default size: the job gives no width/height)" if default_size else ""
    keep_w, keep_h = whole_picture_size(src_w, src_h, width * height, lo, hi)
    return (f"{key}: the {what} is {src_w}x{src_h} ({_ratio(src_w, src_h)}) and the frame is "
            f"{width}x{height} ({_ratio(width, height)}){size_note}: its centre is kept and "
            f"{cut} of its {total} {unit} ({100 * cut / total:.0f}%) are cut at the {edges} edges; "
            f"to keep the whole {what}, give a size of its shape, e.g. width {keep_w} and height {keep_h}")


def pending_notice(key: str, what: str, width: int, height: int) -> str:
    """For a URL input, whose size is known only once the ingest activity downloads it."""
    return (f"{key}: the {what}'s size is known once it is downloaded; a {what} of another shape "
            f"than the frame ({width}x{height}, the default size: the job gives no width/height) "
            f"has its centre kept and its edges cut, and /status will say what was cut")
