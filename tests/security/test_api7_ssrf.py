"""API7:2023 Server side request forgery.

The one place a caller chooses a URL the server will call is a webhook (admins only). Every target that
is not a public address is refused, however it is spelled, both when the webhook is saved (422 on `url`,
by POST and by PATCH) and at every delivery attempt (the sender checks again and connects to the very
address it checked). The identity provider's URL comes from configuration, not from callers.

Cited, not repeated: redirects are never followed, and a DNS answer that changes after the check cannot
redirect a delivery (tests/events/test_webhooks.py, which also has the first 13 targets of the list
below).
"""

from __future__ import annotations

import httpx
import pytest

from rampart.events.webhook_sender import WebhookSender
from tests.security.scene import Scene
from tests.security.surface import API

REFUSED = {
    # loopback, spelled every way a resolver accepts
    "loopback": "http://127.0.0.1/h",
    "loopback_other": "http://127.8.9.10/h",
    "loopback_short": "http://127.1/h",
    "loopback_decimal": "http://2130706433/h",
    "loopback_octal": "http://0177.0.0.1/h",
    "loopback_hex": "http://0x7f.0.0.1/h",
    "loopback_hex_whole": "http://0x7f000001/h",
    "localhost": "http://localhost/h",
    "localhost_upper": "http://LOCALHOST/h",
    "localhost_trailing_dot": "http://localhost./h",
    "localhost_subdomain": "http://api.localhost/h",
    "ipv6_loopback": "http://[::1]/h",
    "ipv6_unspecified": "http://[::]/h",
    "unspecified": "http://0.0.0.0/h",
    "zero": "http://0/h",
    # private, shared, link-local, cloud metadata
    "private_10": "http://10.0.0.1/h",
    "private_172": "http://172.16.5.4/h",
    "private_192": "http://192.168.1.1/h",
    "cgnat": "http://100.64.0.1/h",
    "benchmark": "http://198.18.0.1/h",
    "metadata": "http://169.254.169.254/latest/meta-data/",
    "metadata_decimal": "http://2852039166/latest/meta-data/",
    "ipv6_unique_local": "http://[fd00::1]/h",
    "ipv6_link_local": "http://[fe80::1]/h",
    "ipv6_documentation": "http://[2001:db8::1]/h",
    # IPv6 that carries an IPv4 address
    "ipv4_mapped_loopback": "http://[::ffff:127.0.0.1]/h",
    "ipv4_mapped_metadata": "http://[::ffff:a9fe:a9fe]/h",
    "nat64_loopback": "http://[64:ff9b::127.0.0.1]/h",
    "nat64_metadata": "http://[64:ff9b::a9fe:a9fe]/h",
    "nat64_local_use": "http://[64:ff9b:1::a00:1]/h",
    "sixtofour_loopback": "http://[2002:7f00:1::]/h",
    "sixtofour_private": "http://[2002:c0a8:101::]/h",
    "ipv4_compatible": "http://[::127.0.0.1]/h",
    # multicast and broadcast
    "multicast": "http://224.0.0.1/h",
    "ipv6_multicast": "http://[ff02::1]/h",
    "broadcast": "http://255.255.255.255/h",
    # not http, or not plainly a host
    "file": "file:///etc/passwd",
    "gopher": "gopher://93.184.216.34:70/_x",
    "dict": "dict://93.184.216.34:11211/stat",
    "ftp": "ftp://93.184.216.34/h",
    "javascript": "javascript:alert(1)",
    "data": "data:text/plain,hi",
    "credentials": "http://user:pass@93.184.216.34/h",
    "credentials_trick": "http://93.184.216.34@127.0.0.1/h",
    "no_host": "http:///h",
    "does_not_resolve": "http://no-such-host.invalid/h",
    "too_long": "http://93.184.216.34/" + "a" * 2000,
}
# Public addresses: accepted (nothing is sent when saving; these tests never deliver to them).
ACCEPTED = {
    "public_ipv4": "http://93.184.216.34/h",
    "public_https_port": "https://93.184.216.34:8443/h",
    "public_ipv6": "http://[2606:4700:4700::1111]/h",
    "nat64_public": "http://[64:ff9b::5db8:d822]/h",
}


@pytest.mark.parametrize("url", list(REFUSED.values()), ids=list(REFUSED))
async def test_non_public_targets_are_refused_on_create(
    client: httpx.AsyncClient, scene: Scene, url: str
) -> None:
    r = await client.post(
        f"{API}/admin/webhooks",
        json={"url": url, "events": ["*"], "active": False},
        headers=scene.admin.headers,
    )
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["url"]


@pytest.mark.parametrize("url", list(REFUSED.values()), ids=list(REFUSED))
async def test_non_public_targets_are_refused_on_update(
    client: httpx.AsyncClient, scene: Scene, url: str
) -> None:
    hook = f"{API}/admin/webhooks/{scene.values['webhook']}"
    before = (await client.get(hook, headers=scene.admin.headers)).json()["data"]
    r = await client.patch(hook, json={"url": url}, headers=scene.admin.headers)
    assert r.status_code == 422, r.text
    assert (await client.get(hook, headers=scene.admin.headers)).json()["data"] == before


# The length rule is the API's, not an address rule: a long public URL would be called.
ADDRESS_RULE = {name: url for name, url in REFUSED.items() if name != "too_long"}


@pytest.mark.parametrize("url", list(ADDRESS_RULE.values()), ids=list(ADDRESS_RULE))
async def test_the_sender_refuses_them_too_without_connecting(url: str) -> None:
    """The delivery-time check, for a webhook saved before a rule changed or stored by other means."""
    sender = WebhookSender(timeout=5.0)
    try:
        attempt = await sender.send(url=url, secret="s" * 16, event={"id": "e", "type": "t.created"})
    finally:
        await sender.aclose()
    assert attempt.status_code is None
    assert attempt.error is not None
    assert attempt.error.startswith("refused: "), attempt.error


@pytest.mark.parametrize("url", list(ACCEPTED.values()), ids=list(ACCEPTED))
async def test_public_targets_are_accepted(client: httpx.AsyncClient, scene: Scene, url: str) -> None:
    """The control: the rule refuses addresses, not webhooks."""
    r = await client.post(
        f"{API}/admin/webhooks",
        json={"url": url, "events": ["*"], "active": False},
        headers=scene.admin.headers,
    )
    assert r.status_code == 201, r.text
