"""Entity tags for optimistic concurrency: a row's ETag is its `version`.

`If-Match` and `If-None-Match` are read as RFC 9110 defines them: `*` or a comma-separated list of entity
tags (`"3"`, `W/"3"`), whose empty elements are ignored (the list rule of RFC 9110 5.6.1), so an empty
value is an empty list: `If-Match` then matches nothing (412) and `If-None-Match` changes nothing. A value
that is neither is refused (400 `invalid_header`) rather than taken as a tag that never matches: "has
changed since you fetched it" would be a wrong answer to a malformed request. `If-Match` compares strongly
(a weak tag never matches, RFC 9110 13.1.1); `If-None-Match` weakly.
"""

from __future__ import annotations

import re

from rampart.errors import FieldError, InvalidHeader

# The grammar as a pattern both Python and ECMA-262 read alike (the OpenAPI document carries it too):
# visible ASCII inside the quotes except the quote itself, optional blanks around the commas.
_TAG = r'(?:W/)?"[!#-~]*"'
PRECONDITION_PATTERN = rf"^[ \t]*(?:\*|(?:{_TAG})?(?:[ \t]*,[ \t]*(?:{_TAG})?)*)[ \t]*$"
_PRECONDITION_RE = re.compile(PRECONDITION_PATTERN)
_TAG_RE = re.compile(_TAG)


def etag(version: int) -> str:
    return f'"{version}"'


def check_precondition(name: str, header: str | None) -> None:
    """Raise `InvalidHeader` when the `If-Match`/`If-None-Match` header `name` is present but malformed."""
    if header is not None and _PRECONDITION_RE.fullmatch(header) is None:
        message = f'{name} must be * or a list of entity tags such as "3".'
        raise InvalidHeader(message, errors=[FieldError(name, "invalid_format", message)])


def _tags(header: str) -> list[str]:
    if header.strip() == "*":
        return ["*"]
    return _TAG_RE.findall(header)


def if_match_fails(header: str | None, version: int) -> bool:
    """True when an `If-Match` header is present and names neither `*` nor the current version (strong
    comparison: `W/"3"` does not match). The header was checked by `check_precondition`."""
    if header is None:
        return False
    tags = _tags(header)
    return "*" not in tags and etag(version) not in tags


def if_none_match_hits(header: str | None, version: int) -> bool:
    """True when an `If-None-Match` header names the current version, weak or strong, or `*`: answer 304."""
    if header is None:
        return False
    tags = [tag.removeprefix("W/") for tag in _tags(header)]
    return "*" in tags or etag(version) in tags
