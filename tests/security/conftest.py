"""Fixtures of the security tests: the scene of objects under attack, built once per module."""

from __future__ import annotations

import httpx
import pytest

from rampart.app import Rampart
from tests.security.scene import Scene, make_scene


@pytest.fixture(scope="module")
async def scene(app: Rampart, client: httpx.AsyncClient) -> Scene:
    return await make_scene(app, client)
