"""The README stays true: every setting is in its table, and the two commands are first."""

import dataclasses
import re
from pathlib import Path

from longtalk.settings import PREFIX, Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_documented():
    missing = [PREFIX + f.name.upper() for f in dataclasses.fields(Settings)
               if f"`{PREFIX}{f.name.upper()}`" not in README]
    assert not missing, f"README settings table lacks {missing}"


def test_documented_settings_exist():
    names = {PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    table = README[README.index("## Settings"):README.index("## Run on GPUs")]
    documented = set(re.findall(r"`(LONGTALK_[A-Z0-9_]+)`", table))
    stale = {n for n in documented - names if not n.startswith("LONGTALK_COMFY_")}
    assert not stale, f"README documents settings that do not exist: {stale}"


def test_first_screen_has_the_two_commands():
    first_screen = README.split("---", 1)[0]
    assert "make demo" in first_screen and "make test" in first_screen
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "make test" in ci
