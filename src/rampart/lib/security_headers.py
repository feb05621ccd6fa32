"""The security headers of every response, shared by the request pipeline and by the HTTP protocol that
answers requests no application sees (a malformed request line, a head over the size bound)."""

from __future__ import annotations

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
# JSON (and problem+json) answers: nothing may load from them, nothing may frame them.
API_CSP = b"default-src 'none'; frame-ancestors 'none'"
