"""Clients generated from the served /openapi.json, as client authors make them, type-check their usage.

Python: openapi-python-client (pinned in the dev extra) generates `rampart_client`; its generation prints
no warning, it has one class per resource item with no `Unset` on the fields the server always returns,
and `mypy --strict` accepts tests/clients/python_usage.py against it. TypeScript: openapi-typescript
(pinned with openapi-fetch and typescript in tests/clients/package.json, installed by `npm ci` there)
generates the types, and `tsc --strict` accepts tests/clients/usage.ts. Both usage files create, list with
filters and a cursor, update with If-Match, and read a 422 and a 404 as typed problems.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from rampart.app import Rampart

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent
NODE_BIN = HERE / "node_modules" / ".bin"
# The generated package's own modules are the generator's code (its client.py does not pass --strict);
# what is checked strictly is the usage file, against the generated types.
MYPY_CACHE = HERE.parents[1] / ".mypy_cache" / "generated-clients"
MYPY_INI = "[mypy]\nstrict = True\n\n[mypy-rampart_client.*]\nignore_errors = True\n"


@pytest.fixture(scope="module")
async def document_file(client: httpx.AsyncClient, tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    path = tmp_path_factory.mktemp("openapi") / "openapi.json"
    path.write_text(json.dumps(r.json()))
    return path


def _run(command: list[str], *, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # ruff, for the generator
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def python_client(document_file: Path) -> Path:
    """The generated package `rampart_client`, in a directory of its own."""
    out = document_file.parent / "python"
    out.mkdir()
    done = _run(
        [
            str(BIN / "openapi-python-client"),
            "generate",
            "--path",
            str(document_file),
            "--output-path",
            "rampart_client",
            "--meta",
            "none",
        ],
        cwd=out,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # A warning means a part of the document the generator skipped or guessed at.
    printed = (done.stdout + done.stderr).strip()
    assert printed == "Generating rampart_client", printed
    return out


def _classes(module: Path) -> dict[str, ast.ClassDef]:
    tree = ast.parse(module.read_text())
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def _annotations(cls: ast.ClassDef) -> dict[str, str]:
    return {
        node.target.id: ast.unparse(node.annotation)
        for node in cls.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }


def test_python_client_has_one_class_per_item_with_every_field_set(app: Rampart, python_client: Path) -> None:
    models = python_client / "rampart_client" / "models"
    modules = {path.stem for path in models.glob("*.py")}
    for resource in app.services.registry:
        item = resource.schema_name
        snake = re.sub(r"(?<!^)([A-Z])", r"_\1", item).lower()
        classes = _classes(models / f"{snake}.py")
        fields = _annotations(classes[item])
        expected = set(resource.shown_fields)  # a write-only field is in `New<item>` only
        assert expected <= set(fields), (item, sorted(fields))
        unset = {name: kind for name, kind in fields.items() if name in expected and "Unset" in kind}
        assert unset == {}, (item, unset)
        # One class for the item: no copy per operation (`TasksCreateResponse201Data`, ...).
        copies = sorted(m for m in modules if re.fullmatch(rf"{resource.name}_\w+_response_\d+_data", m))
        assert copies == [], copies
    # One enum per choice field, shared by the item, the bodies and the filters.
    assert not [m for m in modules if re.fullmatch(r"tasks_list_status\w*", m)]
    assert "task_status" in modules


def test_python_usage_type_checks_with_mypy_strict(python_client: Path) -> None:
    shutil.copy(HERE / "python_usage.py", python_client / "python_usage.py")
    (python_client / "mypy.ini").write_text(MYPY_INI)
    done = _run(
        [str(BIN / "mypy"), "--config-file", "mypy.ini", "--cache-dir", str(MYPY_CACHE), "python_usage.py"],
        cwd=python_client,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _node_tools() -> None:
    if not (NODE_BIN / "tsc").exists():
        pytest.skip("run `npm ci` in tests/clients (.ci/run does) for the TypeScript client")


def test_typescript_usage_type_checks_with_tsc_strict(document_file: Path) -> None:
    _node_tools()
    generated = HERE / "generated"
    generated.mkdir(exist_ok=True)
    done = _run(
        [str(NODE_BIN / "openapi-typescript"), str(document_file), "-o", str(generated / "schema.d.ts")],
        cwd=HERE,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warn" not in (done.stdout + done.stderr).lower(), done.stdout + done.stderr
    done = _run([str(NODE_BIN / "tsc"), "-p", "tsconfig.json"], cwd=HERE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_resource_has_its_named_schemas(app: Rampart, document_file: Path) -> None:
    document: dict[str, Any] = json.loads(document_file.read_text())
    schemas = document["components"]["schemas"]
    for resource in app.services.registry:
        base = resource.schema_name
        for name in (base, f"{base}Page", f"{base}FieldsPage"):
            assert name in schemas, name
        if "create" in resource.operations:
            assert f"{base}Create" in schemas
        if "update" in resource.operations:
            assert f"{base}Update" in schemas
