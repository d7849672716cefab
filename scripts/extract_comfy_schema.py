"""Cut a ComfyUI `GET /object_info` dump down to the schema the tests need.

    python scripts/extract_comfy_schema.py PATH/TO/object_info.json [-o tests/fixtures/comfy_schema.json]

Keeps, per node class: name, input (required/optional/hidden) with each input's type and
only its machine-readable options (ranges, choices, defaults, upload flags, VHS format
tables), input_order, output, output_is_list, output_name and output_node. Every tooltip,
description, display name, placeholder, category and other prose is dropped. Classes are
written sorted by name, inputs in the server's own order (input_order and the output arrays
are positional). The output is deterministic, so re-running it gives the committed file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "comfy_schema.json"

# input options that are data, not prose
KEEP_OPTIONS = (
    "default", "min", "max", "step", "round",
    "options", "multiselect",
    "image_upload", "audio_upload", "video_upload", "upload",
    "formats",  # VHS format tables: per-format extra widgets (choices and ranges)
    "forceInput", "rawLink", "lazy",
)
KEEP_CLASS = ("name", "input", "input_order", "output", "output_is_list", "output_name", "output_node")


def _input_spec(spec):
    if not isinstance(spec, (list, tuple)) or not spec:
        return spec
    out = [spec[0]]
    if len(spec) > 1 and isinstance(spec[1], dict):
        out.append({k: spec[1][k] for k in KEEP_OPTIONS if k in spec[1]})
    return out


def _class(info: dict) -> dict:
    out = {}
    for key in KEEP_CLASS:
        if key not in info:
            continue
        if key == "input":
            sections = {}
            for section, inputs in info["input"].items():
                if section == "hidden":
                    # hidden inputs are filled by the server (PROMPT, UNIQUE_ID ...): keep the kind only
                    sections[section] = {n: (v if isinstance(v, str) else v[0] if isinstance(v, list) and v else v)
                                         for n, v in (inputs or {}).items()}
                else:
                    sections[section] = {n: _input_spec(v) for n, v in (inputs or {}).items()}
            out["input"] = sections
        else:
            out[key] = info[key]
    return out


def extract(object_info: dict) -> dict:
    return {name: _class(object_info[name]) for name in sorted(object_info)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("object_info", type=Path, help="a saved GET /object_info reply")
    ap.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    schema = extract(json.loads(args.object_info.read_text(encoding="utf-8")))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(schema, indent=1, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")
    print(f"{len(schema)} classes -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
