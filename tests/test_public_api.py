"""`from rampart import ...` is the public API: every name in `rampart.__all__` imports, and nothing an app
needs is missing from it."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import rampart

SRC = Path(rampart.__file__).resolve().parent


def test_every_public_name_imports() -> None:
    for name in rampart.__all__:
        assert getattr(rampart, name) is not None, name
    assert sorted(rampart.__all__) == rampart.__all__
    assert set(dir(rampart)) >= set(rampart.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        rampart.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018


def test_the_demo_app_imports_only_the_public_api() -> None:
    """What the import contract checks, read from the source: `from rampart import` and nothing deeper."""
    for path in (SRC / "apps").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rampart"):
                assert node.module == "rampart", f"{path.name} imports {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("rampart.") for a in node.names), path.name


def test_importing_rampart_loads_nothing_heavy() -> None:
    """The command line imports `rampart`; its API is loaded name by name when used."""
    probe = (
        "import rampart, sys; heavy = {'starlette', 'asyncpg', 'rampart'};"
        " print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.split() == ["rampart"]


def test_the_public_names_are_the_ones_the_docs_promise() -> None:
    """API.md's "Framework (Python)" section names these; an app's declarations need the rest."""
    promised = {
        "Resource",
        "Field",
        "Policy",
        "Text",
        "Integer",
        "Boolean",
        "Choice",
        "Reference",
        "create_app",
    }
    needed = {"Hooks", "HookContext", "Settings", "Route", "Subscriber", "Conflict", "ValidationFailed"}
    assert promised | needed <= set(rampart.__all__)
    for name in ("Policy", "Hooks", "Resource"):
        assert importlib.import_module("rampart.resources.spec").__dict__[name] is getattr(rampart, name)
