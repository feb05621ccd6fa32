"""Sending one webhook request: the signature, the address check (SSRF) and the HTTP call.

The signature header is `X-Rampart-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.

Unless private networks are allowed, the target host is resolved and every address it resolves to must
be public: loopback, private, link-local (cloud metadata at 169.254.169.254), shared, multicast,
reserved and unspecified addresses are refused. The request then goes to the very address that was
checked (the hostname is kept for `Host` and TLS), so a DNS answer that changes between the check and
the connection cannot point it elsewhere. Redirects are never followed: a 3xx is a failed attempt.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # imported on first use: a worker that sends no webhook never loads httpx
    import httpx

SIGNATURE_HEADER = "X-Rampart-Signature"
USER_AGENT = "Rampart-Webhooks/1"
_RESOLVE_TIMEOUT = 5.0


class UnsafeTarget(Exception):
    """The URL may not be called: bad scheme, no host, or an address that is not public."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one delivery attempt gave: an HTTP status, or an error, and how long it took."""

    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The value of the signature header for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


# IPv6 ranges that carry an IPv4 address in their last 32 bits and that `ipaddress` calls global: NAT64
# (RFC 6052, RFC 8215) and the deprecated IPv4-compatible form. A NAT64 gateway turns 64:ff9b::a9fe:a9fe
# into 169.254.169.254.
_EMBEDS_IPV4 = tuple(map(ipaddress.IPv6Network, ("64:ff9b::/96", "64:ff9b:1::/48", "::/96")))


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
        elif ip.sixtofour is not None:
            ip = ip.sixtofour  # 6to4: 2002:7f00:1:: routes towards 127.0.0.1
        elif any(ip in net for net in _EMBEDS_IPV4):
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.is_global and not ip.is_multicast


class WebhookSender:
    """One HTTP client for every webhook of the process."""

    def __init__(self, *, timeout: float = 10.0, allow_private_networks: bool = False) -> None:
        self.timeout = timeout
        self.allow_private_networks = allow_private_networks
        self._http: httpx.AsyncClient | None = None  # made on first use, inside the running loop

    @property
    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            # No proxies from the environment: the address check must see the real destination.
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout), follow_redirects=False, trust_env=False
            )
        return self._http

    async def aclose(self) -> None:
        client, self._http = self._http, None
        if client is not None:
            await client.aclose()

    async def target(self, url: str) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
        """Where to send for `url`: the URL to connect to, extra headers, request extensions. Raises
        UnsafeTarget unless the URL is http(s) with a host and no credentials, and (unless private networks
        are allowed) every address of its host is public."""
        import httpx

        try:
            parsed = httpx.URL(url)
        except Exception as exc:
            raise UnsafeTarget("not a valid URL") from exc
        if parsed.scheme not in ("http", "https"):
            raise UnsafeTarget("only http and https URLs are allowed")
        if not parsed.host:
            raise UnsafeTarget("the URL has no host")
        if parsed.userinfo:
            raise UnsafeTarget("credentials in the URL are not allowed; sign with the secret instead")
        if self.allow_private_networks:
            return parsed, {}, {}
        host, port = parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            async with asyncio.timeout(_RESOLVE_TIMEOUT):
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError, UnicodeError) as exc:
            # UnicodeError: a host the resolver cannot even encode (a label over 63 characters, IDNA).
            raise UnsafeTarget(f"the host {host[:100]} does not resolve") from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        if not addresses:
            raise UnsafeTarget(f"the host {host} does not resolve")
        # Every answer must be public, or a name with one public and one private address would get through.
        for address in addresses:
            if not _public(address):
                raise UnsafeTarget(f"{host} resolves to a non-public address ({address})")
        pinned = parsed.copy_with(host=str(addresses[0]))
        extensions: dict[str, Any] = {"sni_hostname": host} if parsed.scheme == "https" else {}
        return pinned, {"Host": parsed.netloc.decode("ascii")}, extensions

    async def send(self, *, url: str, secret: str, event: Mapping[str, Any]) -> Attempt:
        """POST `event` to `url`, signed with `secret`. Never raises: failures are in the Attempt."""
        import httpx

        started = time.monotonic()
        body = orjson.dumps(event, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign(secret, int(time.time()), body),
            "X-Rampart-Event-Id": str(event.get("id", "")),
            "X-Rampart-Event-Type": str(event.get("type", "")),
            # Receivers deduplicate on this: delivery is at least once.
            "Idempotency-Key": str(event.get("id", "")),
        }

        def done(status: int | None, error: str | None) -> Attempt:
            return Attempt(status, error, int((time.monotonic() - started) * 1000))

        try:
            async with asyncio.timeout(self.timeout):
                target, extra, extensions = await self.target(url)
                request = self._client.build_request(
                    "POST", target, content=body, headers={**headers, **extra}, extensions=extensions
                )
                # Only the status matters; the body is not read, so a huge answer costs nothing.
                response = await self._client.send(request, stream=True)
                await response.aclose()
        except UnsafeTarget as exc:
            return done(None, f"refused: {exc}")
        except TimeoutError:
            return done(None, f"timed out after {self.timeout:g} s")
        except (httpx.HTTPError, OSError) as exc:
            return done(None, f"{type(exc).__name__}: {exc}"[:500])
        if response.is_redirect:
            return done(response.status_code, "redirects are not followed")
        if not 200 <= response.status_code < 300:
            return done(response.status_code, f"the receiver answered {response.status_code}")
        return done(response.status_code, None)
