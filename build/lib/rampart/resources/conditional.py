"""Entity tags for optimistic concurrency: a row's ETag is its `version`."""

from __future__ import annotations


def etag(version: int) -> str:
    return f'"{version}"'


def _tags(header: str) -> list[str]:
    return [part.strip().removeprefix("W/") for part in header.split(",") if part.strip()]


def if_match_fails(header: str | None, version: int) -> bool:
    """True when an `If-Match` header is present and names neither `*` nor the current version."""
    if header is None:
        return False
    tags = _tags(header)
    return "*" not in tags and etag(version) not in tags


def if_none_match_hits(header: str | None, version: int) -> bool:
    """True when an `If-None-Match` header names the current version (or `*`): answer 304."""
    if header is None:
        return False
    tags = _tags(header)
    return "*" in tags or etag(version) in tags
