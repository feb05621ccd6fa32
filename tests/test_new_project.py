"""A new user's path, as the framework issue set it: a fresh virtual environment, `pip install` of this
checkout, `rampart init`, two resources declared with top-level imports only (one with no policy, one with
`Policy.inherit`), `makemigrations` into the project's folder, `migrate`, `serve`; two users see only their
own rows; no demo table exists; a second `makemigrations` writes nothing; a drop needs
`--allow-destructive`; and the project's own `make test` passes.

Slow (a virtual environment and two installs, about two minutes): it is the one test of the whole path.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import ADMIN_URL, fresh_database
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent

RESOURCES = '''"""Products, each its seller's, and reviews that inherit their product's access."""

from rampart import Field, Integer, Policy, Reference, Resource, Text

products = Resource(
    name="products",
    fields={
        "name": Field(Text(min_length=1, max_length=100), required=True, filter=True, sort=True),
        "price": Field(Integer(minimum=0), required=True, filter=True, sort=True),
    },
)

reviews = Resource(
    name="reviews",
    fields={
        "product_id": Field(Reference("products"), required=True, immutable=True, filter=("eq",)),
        "stars": Field(Integer(minimum=1, maximum=5), required=True),
    },
    policy=Policy.inherit("product_id"),
)


def declare() -> list[Resource]:
    return [products, reviews]
'''

APP = (
    "from rampart import create_app\n\nfrom shop.resources import declare\n\n"
    "app = create_app(resources=declare())\n"
)


def run(
    args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return done


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (
        f"{done.args}\nstdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    )
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtual environment with this checkout installed (not editable: as a user installs it)."""
    where = tmp_path_factory.mktemp("venv") / "v"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(where)], check=True, timeout=120)
    # What a package build reads, copied: building in the checkout would leave build/ and egg-info there.
    source = tmp_path_factory.mktemp("source")
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [str(where / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    ok(run([*pip, str(source)], cwd=source, env=dict(os.environ), timeout=900))
    yield where
    shutil.rmtree(where, ignore_errors=True)


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_database(migrated=False) as url:  # nothing in it: `rampart migrate` makes what the app needs
        yield url


def test_a_new_users_path(venv: Path, database: str, tmp_path: Path) -> None:
    rampart = str(venv / "bin" / "rampart")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAMPART_") and k != "VIRTUAL_ENV"}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    ok(run([rampart, "init", "shop"], cwd=tmp_path, env=env))
    project = tmp_path / "shop"
    (project / "shop" / "resources.py").write_text(RESOURCES)
    (project / "shop" / "app.py").write_text(APP)  # the example's own route goes with it
    for stale in (project / "migrations").glob("*_notes.py"):  # the example's, replaced by ours
        stale.unlink()
    (project / "tests" / "test_notes.py").unlink()
    env["RAMPART_DATABASE_URL"] = database
    env["RAMPART_RATE_LIMIT_AUTH"] = "1000/minute"

    written = ok(run([rampart, "makemigrations", "-m", "products and reviews"], cwd=project, env=env))
    assert "database postgresql://" in written  # the command says which database it uses
    revisions = sorted((project / "migrations").glob("*.py"))
    assert len(revisions) == 1, written
    assert "create_table('products'" in revisions[0].read_text()
    ok(run([rampart, "migrate"], cwd=project, env=env))

    again = ok(run([rampart, "makemigrations", "-m", "nothing"], cwd=project, env=env))
    assert "No changes" in again
    assert sorted((project / "migrations").glob("*.py")) == revisions

    tables = asyncio.run(_tables(database))
    assert {"products", "reviews", "users"} <= tables
    assert not {"projects", "tasks", "project_members"} & tables  # no demo table

    alice, bob = (_user(rampart, project, env, f"{who}-{uuid.uuid4().hex[:6]}@example.test") for who in "ab")
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [rampart, "serve", "--port", str(port), "--workers", "1", "--no-migrate"],
        cwd=project,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(base, server, tmp_path / "serve.log")
        with httpx.Client(base_url=base, timeout=10) as http:
            r = http.post("/api/v1/products", json={"name": "Lamp", "price": 30}, headers=alice)
            assert r.status_code == 201, r.text
            mine = r.json()["data"]
            theirs = http.post("/api/v1/products", json={"name": "Desk", "price": 90}, headers=bob).json()
            theirs = theirs["data"]
            r = http.post("/api/v1/reviews", json={"product_id": mine["id"], "stars": 5}, headers=alice)
            assert r.status_code == 201, r.text
            review = r.json()["data"]
            assert [p["id"] for p in http.get("/api/v1/products", headers=alice).json()["data"]] == [
                mine["id"]
            ]
            assert [p["id"] for p in http.get("/api/v1/products", headers=bob).json()["data"]] == [
                theirs["id"]
            ]
            assert http.get(f"/api/v1/products/{mine['id']}", headers=bob).status_code == 404
            assert http.get(f"/api/v1/reviews/{review['id']}", headers=bob).status_code == 404
            assert http.get("/api/v1/reviews", headers=bob).json()["data"] == []
            r = http.post("/api/v1/reviews", json={"product_id": mine["id"], "stars": 1}, headers=bob)
            assert (r.status_code, r.json()["errors"][0]["field"]) == (422, "product_id")
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()

    # Dropping a resource is a drop_table: refused unless asked for.
    (project / "shop" / "resources.py").write_text(
        RESOURCES.replace("return [products, reviews]", "return [products]")
    )
    refused = run([rampart, "makemigrations", "-m", "drop reviews"], cwd=project, env=env)
    assert refused.returncode != 0
    assert "reviews" in refused.stdout + refused.stderr
    assert "--allow-destructive" in refused.stdout + refused.stderr
    assert sorted((project / "migrations").glob("*.py")) == revisions
    ok(run([rampart, "makemigrations", "-m", "drop reviews", "--allow-destructive"], cwd=project, env=env))
    assert len(list((project / "migrations").glob("*.py"))) == 2

    # The project's own tests, with its own Makefile, on a database of their own.
    (project / "tests" / "test_products.py").write_text(_PROJECT_TEST)
    test_env = {k: v for k, v in env.items() if k != "RAMPART_DATABASE_URL"}
    test_env["RAMPART_TEST_ADMIN_URL"] = ADMIN_URL
    made = ok(run(["make", "test", f"VENV={venv}"], cwd=project, env=test_env, timeout=900))
    assert "passed" in made
    assert "failed" not in made


_PROJECT_TEST = """import httpx

from rampart.testing import MakeUser


async def test_products_are_their_sellers(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    alice, bob = await make_user(), await make_user()
    r = await client.post("/api/v1/products", json={"name": "Lamp", "price": 3}, headers=alice.headers)
    assert r.status_code == 201, r.text
    url = f"/api/v1/products/{r.json()['data']['id']}"
    assert (await client.get(url, headers=bob.headers)).status_code == 404
"""


def _user(rampart: str, project: Path, env: dict[str, str], email: str) -> dict[str, str]:
    ok(run([rampart, "users", "create", "--email", email, "--name", email], cwd=project, env=env))
    issued = run([rampart, "tokens", "issue", "--email", email], cwd=project, env=env)
    ok(issued)
    return {"Authorization": f"Bearer {issued.stdout.strip()}"}  # stdout holds only the token


def _wait(base: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    answer = "no answer"
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()[-4000:]
        try:
            r = httpx.get(f"{base}/health/ready", timeout=2)
            if r.status_code == 200:
                return
            answer = r.text
        except httpx.HTTPError as exc:
            answer = repr(exc)
        time.sleep(0.2)
    raise AssertionError(f"the server did not become ready: {answer}\n{log.read_text()[-4000:]}")


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return {r["tablename"] for r in rows}


def test_a_new_project_passes_its_own_tests_as_generated(venv: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAMPART_") and k != "VIRTUAL_ENV"}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    env["RAMPART_TEST_ADMIN_URL"] = ADMIN_URL
    made = ok(run([str(venv / "bin" / "rampart"), "init", "notebook"], cwd=tmp_path, env=env))
    assert "make test" in made
    project = tmp_path / "notebook"
    assert (project / ".env").stat().st_mode & 0o077 == 0  # its secret is the owner's alone
    tested = ok(run(["make", "test", f"VENV={venv}"], cwd=project, env=env, timeout=900))
    assert "3 passed" in tested
    refused = run([str(venv / "bin" / "rampart"), "init", "notebook"], cwd=tmp_path, env=env)
    assert refused.returncode != 0
    assert "already exists" in refused.stderr
    for bad in ("Shop", "1shop", "class", "json", "rampart"):
        refused = run([str(venv / "bin" / "rampart"), "init", bad], cwd=tmp_path, env=env)
        assert refused.returncode != 0, bad
        assert not (tmp_path / bad).exists()
