"""One private stack per module (PostgreSQL, Redis, `rampart serve --workers 2`, a webhook receiver):
about 5 s to start, shared by the module's fault tests, each of which heals what it broke."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.services import Stack, available, stack


@pytest.fixture(scope="module")
def faults_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    reason = available()
    if reason is not None:
        pytest.skip(reason)
    with stack(tmp_path_factory.mktemp("faults")) as started:
        yield started
