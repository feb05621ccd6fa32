"""docs/guide/configuration.md documents every setting: each `Settings` field has a row in its Settings
table, under the environment name it is read from, and each row there names a variable Rampart reads."""

from __future__ import annotations

import re
from pathlib import Path

from rampart.config import Settings

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide" / "configuration.md"
# Read outside `Settings` (by the connection balancer of `rampart serve`), documented in the same table.
NOT_SETTINGS = {"RAMPART_BALANCE_PATIENCE"}


def documented() -> set[str]:
    text = GUIDE.read_text()
    table = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", table, re.MULTILINE))


def environment_names() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    return {
        info.validation_alias if isinstance(info.validation_alias, str) else f"{prefix}{name}".upper()
        for name, info in Settings.model_fields.items()
    }


def test_every_setting_has_a_row() -> None:
    assert sorted(environment_names() - documented()) == []


def test_every_row_is_a_setting() -> None:
    assert sorted(documented() - environment_names() - NOT_SETTINGS) == []


def test_the_table_is_found() -> None:
    """The control: the parsing above reads the table (a renamed heading would make both tests pass)."""
    assert {"RAMPART_DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR", "RAMPART_BALANCE_PATIENCE"} <= documented()
