"""A job's optional `name` and `labels` (extension fields; RunPod clients never send them): how
an operator finds a render again. They are no render parameter: they travel in the render's
memo and in visibility (LongtalkName, LongtalkLabels), both set when the render starts, never
by the workflow; the memo also keeps the start of the prompt for the dashboard's list.

    name    a string, 1-100 characters after trimming, no control characters
    labels  a list of at most 16 distinct labels, each 1-40 letters, digits and . _ : = / -,
            starting with a letter or digit ("team-a", "lang:en", "client=acme")
"""

from __future__ import annotations

import re
import unicodedata

from temporalio.common import SearchAttributePair

from .. import visibility as vis
from ..errors import InputError
from ..text import shorten

MAX_NAME_CHARS = 100
MAX_LABELS = 16
MAX_LABEL_CHARS = 40
LABEL = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:=/-]{{0,{MAX_LABEL_CHARS - 1}}}")
LABEL_RULE = (f"1-{MAX_LABEL_CHARS} letters, digits, '.', '_', ':', '=', '/' or '-', "
              f"starting with a letter or digit")
PROMPT_SNIPPET_CHARS = 80


def parse_name(inp: dict) -> str | None:
    value = inp.get("name")
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError("name", f"must be a string, got {type(value).__name__}")
    value = value.strip()
    if not value:
        raise InputError("name", "must not be empty (leave it out for no name)")
    if len(value) > MAX_NAME_CHARS:
        raise InputError("name", f"at most {MAX_NAME_CHARS} characters, got {len(value)}")
    if any(unicodedata.category(c).startswith("C") for c in value):
        raise InputError("name", "must not contain control characters")
    return value


def parse_labels(inp: dict) -> tuple[str, ...]:
    value = inp.get("labels")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InputError("labels", f"must be a list of strings, got {type(value).__name__}")
    if len(value) > MAX_LABELS:
        raise InputError("labels", f"at most {MAX_LABELS} labels, got {len(value)}")
    for i, label in enumerate(value):
        if not isinstance(label, str) or not LABEL.fullmatch(label):
            raise InputError(f"labels[{i}]", f"use {LABEL_RULE}")
    if len(set(value)) != len(value):
        twice = next(x for i, x in enumerate(value) if x in value[:i])
        raise InputError("labels", f"{twice!r} is given twice")
    return tuple(value)


def tag_memo(name: str | None, labels: tuple[str, ...] | list[str], prompt: str) -> dict:
    """What the render's memo keeps of them (and of its prompt) for /status and the dashboard."""
    memo: dict = {"prompt": shorten(prompt, PROMPT_SNIPPET_CHARS)}
    if name:
        memo["name"] = name
    if labels:
        memo["labels"] = list(labels)
    return memo


def tag_attributes(name: str | None, labels) -> list[SearchAttributePair]:
    """Their search attributes: the dashboard's search finds a name by its beginning and a label."""
    pairs = []
    if name:
        pairs.append(SearchAttributePair(vis.NAME_KEY, name))
    if labels:
        pairs.append(SearchAttributePair(vis.LABELS_KEY, list(labels)))
    return pairs
