"""The README is the user's manual: its configuration table must name every setting the runtime reads."""

from dataclasses import fields
from pathlib import Path

from shared.config import ENV_PREFIX, Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_documented():
    missing = [ENV_PREFIX + f.name.upper() for f in fields(Settings) if f"`{ENV_PREFIX}{f.name.upper()}`" not in README]
    assert not missing, f"README's configuration table lacks {missing}"


def test_two_commands_come_first():
    assert README.index("make demo") < README.index("## The path")
    assert "make test" in README
