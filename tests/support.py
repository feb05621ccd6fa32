"""Small helpers several test modules share: a free loopback port, and how to run Debian's Chromium."""

from __future__ import annotations

import shutil
import socket

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Headless, and no background traffic: the machine reaches nothing but package registries.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
