"""Error tracking: with RAMPART_SENTRY_DSN set, error logs reach Sentry (a real local ingest endpoint
here) with their request id, and no secret goes with them."""

from __future__ import annotations

import gzip
import subprocess
import sys
import zlib
from collections.abc import Iterator

import pytest

from rampart.ops.error_tracking import FILTERED, scrub, scrub_text
from tests.conftest import TEST_SECRET
from tests.support import QuietHandler, serving

# The server's own factory (rampart.asgi:create) sets up error tracking; then an unhandled error is logged
# the way the pipeline logs one, with secrets in its message and its extra fields.
WORKER = """
import logging, sentry_sdk
from rampart.asgi import create
create()
try:
    raise ConnectionError("cannot reach postgresql://app:hunter2@db.internal/rampart with Bearer "
                          "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl")
except ConnectionError as exc:
    logging.getLogger("rampart.request").error(
        "unhandled error", exc_info=exc, extra={"request_id": "req-7a3f", "authorization": "Bearer abc.def"}
    )
sentry_sdk.flush(timeout=10)
"""


@pytest.fixture
def ingest() -> Iterator[tuple[str, list[bytes]]]:
    received: list[bytes] = []

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding == "br":
                pytest.fail("brotli envelopes are not expected here")
            received.append(body)
            self.reply(200)

    with serving(Handler) as port:
        yield f"http://publickey@127.0.0.1:{port}/1", received


def test_an_error_log_reaches_sentry_with_its_request_id_and_without_secrets(
    ingest: tuple[str, list[bytes]], database_url: str
) -> None:
    dsn, received = ingest
    env = {
        "PATH": "/usr/bin:/bin",
        "RAMPART_ENV": "test",
        "RAMPART_JWT_SECRET": TEST_SECRET,
        "RAMPART_DATABASE_URL": database_url,
        "RAMPART_SENTRY_DSN": dsn,
        "RAMPART_EVENTS_DISPATCHER": "false",
    }
    proc = subprocess.run(
        [sys.executable, "-c", WORKER], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    payload = b"\n".join(received)
    assert b"req-7a3f" in payload
    assert b"ConnectionError" in payload
    assert b"hunter2" not in payload
    assert b"abc.def" not in payload
    assert b"eyJhbGciOiJIUzI1NiJ9" not in payload
    assert TEST_SECRET.encode() not in payload
    assert FILTERED.encode() in payload


def test_scrub_masks_sensitive_keys_headers_and_secrets_in_text() -> None:
    event = {
        "request": {"headers": [["Authorization", "Bearer x"], ["Accept", "*/*"]], "cookies": {"sid": "1"}},
        "extra": {"request_id": "r1", "webhook_secret": "s3cr3t", "nested": {"Api-Key": "k"}},
        "message": "POST to https://user:pw@example.com failed; token Bearer abc",
    }
    clean = scrub(event)
    assert clean["request"]["headers"] == [["Authorization", FILTERED], ["Accept", "*/*"]]
    assert clean["request"]["cookies"] == FILTERED
    assert clean["extra"] == {"request_id": "r1", "webhook_secret": FILTERED, "nested": {"Api-Key": FILTERED}}
    assert "pw" not in clean["message"].replace("https", "")
    assert "abc" not in clean["message"]
    assert scrub_text("plain text stays") == "plain text stays"
