"""`rampart login-link` and the first administrator's link of `rampart serve`, as users run them: real
subprocesses on a fresh database; the links they print are then used like a browser would."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rampart.app import Rampart
from rampart.clitasks import first_admin_link
from rampart.config import Settings
from tests.conftest import fresh_database, new_user
from tests.support import free_port
from tests.test_cli import RAMPART, TIMEOUT, assert_clean_failure, cli_env, rampart

PUBLIC = "https://console.example.test"
_LINK = re.compile(r"(https?://\S+/console/sign-in/link\?token=[A-Za-z0-9_-]+)")


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def test_login_link_prints_a_one_time_url_under_the_public_url(database: str, tmp_path: Path) -> None:
    env = cli_env(database, RAMPART_PUBLIC_URL=PUBLIC)
    assert (
        rampart(
            "users", "create", "--email", "Boss@Example.test", "--role", "admin", env=env, cwd=tmp_path
        ).returncode
        == 0
    )
    result = rampart("login-link", "--email", "boss@example.test", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    link = result.stdout.strip()
    assert _LINK.fullmatch(link), link
    assert link.startswith(f"{PUBLIC}/console/sign-in/link?token=")
    second = rampart("login-link", "--email", "boss@example.test", env=env, cwd=tmp_path).stdout.strip()
    assert second != link  # a new token each time


def test_login_link_refuses_unknown_users_and_non_admins(database: str, tmp_path: Path) -> None:
    env = cli_env(database)
    assert_clean_failure(
        rampart("login-link", "--email", "nobody@example.test", env=env, cwd=tmp_path), "no enabled user"
    )
    assert rampart("users", "create", "--email", "plain@example.test", env=env, cwd=tmp_path).returncode == 0
    assert_clean_failure(
        rampart("login-link", "--email", "plain@example.test", env=env, cwd=tmp_path), "not an administrator"
    )
    off = cli_env(database, RAMPART_CONSOLE="off")
    assert_clean_failure(rampart("login-link", "--email", "plain@example.test", env=off, cwd=tmp_path), "off")


def test_serve_prints_a_first_admin_link_on_a_database_without_one(tmp_path: Path) -> None:
    port = free_port()
    with fresh_database() as url:
        log = (tmp_path / "serve.log").open("w+")
        env = cli_env(url, RAMPART_PUBLIC_URL=f"http://127.0.0.1:{port}")
        proc = subprocess.Popen(
            [RAMPART, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + TIMEOUT
            link = None
            while time.monotonic() < deadline and proc.poll() is None and link is None:
                log.seek(0)
                found = _LINK.search(log.read())
                link = found.group(1) if found else None
                time.sleep(0.2)
            assert link, "no first-admin link printed"
            with httpx.Client(timeout=5) as browser:
                for _ in range(100):
                    try:
                        page = browser.get(link)
                        break
                    except httpx.TransportError:
                        time.sleep(0.2)
                assert page.status_code == 200, page.text
                assert "no administrator yet" in page.text
                token = re.search(r'name="token" value="([^"]+)"', page.text)
                csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
                assert token
                assert csrf
                r = browser.post(
                    f"http://127.0.0.1:{port}/console/sign-in/link",
                    data={
                        "token": token.group(1),
                        "csrf_token": csrf.group(1),
                        "email": "first@example.test",
                    },
                )
                assert r.status_code == 303, r.text
                assert browser.get(f"http://127.0.0.1:{port}/console").status_code == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            log.close()


async def test_no_first_admin_link_once_an_administrator_exists(app: Rampart, settings: Settings) -> None:
    await new_user(app, role="admin")
    assert await first_admin_link(settings) is None
