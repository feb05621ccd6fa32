"""The real OpenID Connect provider of the tests: `provider.mjs` (npm `oidc-provider`) in a Node process.

`ensure_installed()` runs `npm ci` here the first time (from the committed package-lock.json), so a
clean clone needs only Node and npm. `sign_in()` plays the browser's part of the authorization-code flow
over plain HTTP: the provider's login form, its redirects, and back to Rampart's callback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
from joserfc.jwk import RSAKey

from tests.support import free_port

HERE = Path(__file__).resolve().parent
CLIENT_ID = "rampart-test"
CLIENT_SECRET = "rampart-test-client-secret"  # a test fixture, registered only at the test provider
_install_lock = threading.Lock()


def ensure_installed() -> None:
    """`npm ci` once: node_modules is not committed."""
    with _install_lock:
        if (HERE / "node_modules" / "oidc-provider" / "package.json").exists():
            return
        npm = shutil.which("npm")
        assert npm, "npm is needed for the OpenID Connect tests (Node 20+ and npm)"
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HERE, check=True, timeout=300
        )


def new_jwks(kid: str) -> dict[str, Any]:
    key = RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"}, private=True)
    return {"keys": [key.as_dict(private=True)]}


class NodeProvider:
    """One `oidc-provider` process on a fixed port; restartable with other keys (key rotation)."""

    def __init__(self, *, redirect_uri: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.redirect_uri = redirect_uri
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, jwks: dict[str, Any]) -> None:
        ensure_installed()
        node = shutil.which("node")
        assert node, "node is needed for the OpenID Connect tests"
        env = {
            **os.environ,
            "OIDC_PORT": str(self.port),
            "OIDC_CLIENT_ID": CLIENT_ID,
            "OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "OIDC_REDIRECT_URI": self.redirect_uri,
            "OIDC_JWKS": json.dumps(jwks),
            "NODE_ENV": "test",
        }
        self._proc = subprocess.Popen(
            [node, str(HERE / "provider.mjs")],
            cwd=HERE,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self._proc.poll() is None, "the test OpenID provider exited at start"
            try:
                r = httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=1)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise AssertionError("the test OpenID provider did not start")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


async def to_callback(
    browser: httpx.AsyncClient,
    authorize_url: str,
    *,
    login: str | None,
    cancel: bool = False,
    callback: str | None = None,
) -> str:
    """Follow the provider's pages from the authorize URL until it sends the browser to the callback
    (`CALLBACK_PREFIX` unless given); returns that callback URL (with `code` and `state`, or `error`)."""
    prefix = callback or CALLBACK_PREFIX
    url = authorize_url
    for _ in range(10):
        r = await browser.get(url)
        if r.status_code in (302, 303):
            url = urljoin(url, r.headers["location"])
            if url.startswith(prefix):
                return url
            continue
        assert r.status_code == 200, (r.status_code, r.text[:500])
        uid = url.rstrip("/").rsplit("/", 1)[-1]
        action = f"/interaction/{uid}/abort" if cancel else f"/interaction/{uid}/login"
        r = await browser.post(urljoin(url, action), data={} if cancel else {"login": login or ""})
        assert r.status_code in (302, 303), (r.status_code, r.text[:500])
        url = urljoin(url, r.headers["location"])
        if url.startswith(prefix):
            return url
    raise AssertionError("the provider never sent the browser back")


CALLBACK_PREFIX = "http://testserver/api/v1/auth/google/callback"
