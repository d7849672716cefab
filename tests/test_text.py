"""Shortening text for messages and logs (longtalk.text)."""

from longtalk.text import TRUNCATED, first_line, shorten


def test_shorten_folds_white_space_and_marks_the_cut():
    assert shorten("a  b\n\tc", 10) == "a b c"
    assert shorten("x" * 20, 10) == "x" * 9 + "…"
    assert len(shorten("y" * 500, 240)) == 240
    assert shorten("z" * 50, 30, TRUNCATED) == "z" * (30 - len(TRUNCATED)) + TRUNCATED
    assert shorten(ValueError("bad  value"), 40) == "bad value"


def test_first_line():
    assert first_line("\n first reason\nsecond") == "first reason"
    assert first_line(ValueError()) == "ValueError"
    assert first_line(OSError("x" * 300), 200) == "x" * 199 + "…"
