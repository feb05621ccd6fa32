"""Logs: JSON lines carrying the request id, and no token or secret in any record."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest

from rampart.ops.logging import JsonFormatter, TextFormatter, configure_logging, redact
from tests.apps.slow import BOOM, serve
from tests.conftest import TEST_SECRET, User, make_settings

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


@pytest.fixture(scope="module")
async def probe(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(database_url, app="tests.apps.slow:declare", env="production", access_log=True)
    async with serve(settings) as (_, client):
        yield client


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the rampart loggers write through the JSON formatter during the test."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("rampart")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(level)


def _everything_logged(records: list[logging.LogRecord]) -> str:
    """Each record in every form a handler could write: message, args, extras, traceback, both formats."""
    text = TextFormatter("%(message)s")
    parts = []
    for record in records:
        parts += [record.getMessage(), repr(record.args), repr(record.__dict__)]
        parts.append(logging.Formatter().format(record))  # unredacted, as a plain handler would write
        parts.append(JsonFormatter().format(record))
        parts.append(text.format(record))
    return "\n".join(parts)


async def test_tokens_and_secrets_never_reach_the_logs(
    probe: httpx.AsyncClient, alice: User, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        r = await probe.post("/api/v1/pipeline_probes", json={"mode": "boom"}, headers=alice.headers)
        assert r.status_code == 500
        r = await probe.get("/api/v1/pipeline_probes?limit=5", headers=alice.headers)
        assert r.status_code == 200
        r = await probe.get("/api/v1/pipeline_probes", headers={"Authorization": f"Bearer {alice.token}x"})
        assert r.status_code == 401
    assert caplog.records, "the 500 and the access log must be logged"
    assert any(BOOM in str(rec.exc_info[1]) for rec in caplog.records if rec.exc_info)
    logged = _everything_logged(caplog.records) + caplog.text
    assert alice.token not in logged
    assert alice.token.split(".")[2] not in logged  # not even the signature
    assert TEST_SECRET not in logged


async def test_records_carry_the_request_id(
    probe: httpx.AsyncClient, alice: User, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        r = await probe.post(
            "/api/v1/pipeline_probes",
            json={"mode": "boom"},
            headers={**alice.headers, "X-Request-ID": "log-trace-1"},
        )
    assert r.status_code == 500
    ours = [rec for rec in caplog.records if rec.name.startswith("rampart")]
    assert {getattr(rec, "request_id", None) for rec in ours} == {"log-trace-1"}
    assert any(rec.levelno == logging.ERROR for rec in ours)


async def test_json_formatter_writes_one_json_object_per_line(
    probe: httpx.AsyncClient, alice: User, json_lines: io.StringIO
) -> None:
    r = await probe.get("/api/v1/pipeline_probes", headers=alice.headers)
    assert r.status_code == 200
    boom = await probe.post("/api/v1/pipeline_probes", json={"mode": "boom"}, headers=alice.headers)
    assert boom.status_code == 500
    lines = json_lines.getvalue().splitlines()
    assert lines
    entries: list[dict[str, Any]] = [orjson.loads(line) for line in lines]
    for entry in entries:
        assert {"ts", "level", "logger", "msg"} <= set(entry)
        assert entry["ts"].endswith("+00:00")
    access = [e for e in entries if e["logger"] == "rampart.access"]
    ok = next(e for e in access if e["request_id"] == r.headers["x-request-id"])
    assert ok["level"] == "info"
    assert ok["status"] == 200
    assert ok["method"] == "GET"
    assert ok["route"] == "/api/v1/pipeline_probes"
    assert ok["user_id"] == alice.id
    assert isinstance(ok["duration_ms"], float)
    failed = [e for e in entries if e.get("request_id") == boom.headers["x-request-id"]]
    error = next(e for e in failed if e["level"] == "error")
    assert "RuntimeError" in error["exc"]
    assert any(e["logger"] == "rampart.access" and e["status"] == 500 for e in failed)
    assert alice.token not in json_lines.getvalue()


def test_json_formatter_redacts_messages_and_tracebacks() -> None:
    logger = logging.getLogger("rampart.test.redact")
    try:
        raise RuntimeError(f"connect failed for postgresql://app:hunter2@db/prod with Bearer {JWT}")
    except RuntimeError:
        record = logger.makeRecord(
            logger.name,
            logging.ERROR,
            __file__,
            1,
            "refused %s",
            (f"Authorization: Bearer {JWT}",),
            exc_info=__import__("sys").exc_info(),
            extra={"request_id": "rid-1", "user_id": "u1"},
        )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = orjson.loads(line)
    assert entry["request_id"] == "rid-1"
    assert entry["user_id"] == "u1"
    assert entry["level"] == "error"
    for secret in (JWT, "hunter2"):
        assert secret not in line
    assert "RuntimeError" in entry["exc"]
    text = TextFormatter("%(levelname)s %(message)s").format(record)
    assert "[request_id=rid-1]" in text
    assert JWT not in text
    assert "hunter2" not in text


def test_configure_logging_json_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging(json=True, level="info")
        logging.getLogger("rampart.test").info("hello %s", "world", extra={"request_id": "r-9"})
        logging.getLogger("rampart.test").debug("not at info level")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    entry = orjson.loads(lines[0])
    assert entry["msg"] == "hello world"
    assert entry["request_id"] == "r-9"
    assert entry["logger"] == "rampart.test"


# ----- redact -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"Authorization: Bearer {JWT}", JWT),
        ("authorization: bearer abc.DEF-123_~+/=", "abc.DEF-123_~+/="),
        ("BEARER sometoken", "sometoken"),
        (f"token in a url ?t={JWT}&x=1", JWT),
        (f"bare jwt {JWT} here", JWT),
        ("password=hunter2", "hunter2"),
        ("PASSWORD: hunter2", "hunter2"),
        ("login failed password = hunter2 for bob", "hunter2"),
        ('{"password": "hunter2"}', "hunter2"),
        ("{'password': 'hunter2'}", "hunter2"),
        ("client_secret=s3cr3t-value", "s3cr3t-value"),
        ("api_key=AKIA1234567890", "AKIA1234567890"),
        ("refresh_token=r3fr3sh", "r3fr3sh"),
        ("postgresql://rampart:hunter2@db.internal:5432/rampart", "hunter2"),
        ("postgres://rampart:p%40ss@db/x", "p%40ss"),
        ("redis://:hunter2@cache:6379/0", "hunter2"),
        ("rediss://default:hunter2@cache:6380", "hunter2"),
        ("postgresql+asyncpg://u:hunter2@h/d", "hunter2"),
    ],
)
def test_redact_scrubs_credentials(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out, out
    assert "***" in out


def test_redact_keeps_the_rest() -> None:
    assert redact("postgresql://rampart:hunter2@db:5432/app") == "postgresql://rampart:***@db:5432/app"
    assert redact("password=hunter2 user_id=7") == "password=*** user_id=7"
    assert redact(f"Bearer {JWT}") == "Bearer ***"
    for harmless in (
        "GET /api/v1/tasks/0191b3a2-7c4e-7d2a-9f00-3b5c6d7e8f90 200 3.2ms",
        "postgresql://db.internal:5432/rampart",
        "user alice@example.com logged in",
        "https://example.com:8443/path",
    ):
        assert redact(harmless) == harmless
