"""The bus: fire-and-forget notices between processes.

``connect`` picks the implementation from the URL scheme, so callers never know which one they
hold: ``memory://NAME`` is the in-process broker the edge profile uses (every bus connected to the
same NAME in one process shares it), ``nats://`` and ``tls://`` reach a NATS server. Credentials
come either in the URL (``nats://user:password@host:port``) or as keyword arguments; they never
appear in a log line or an error message (``redact_url`` is the one place that hides them).
"""

from __future__ import annotations

import re
import urllib.parse

from services.bus import memory, types

# Greedy up to the last "@" of the word: a password may itself hold "@" or "/", and hiding too much
# is the safe way to be wrong.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>\S*)@")


async def connect(
    url: str,
    *,
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    name: str = "k3s",
    connect_timeout: float = 10.0,
) -> types.Bus:
    """Connect to the bus at ``url``; raise ``BusError`` when it cannot be reached or refuses us."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme == "memory":
        return memory.connect(url)
    if scheme in ("nats", "tls"):
        # Imported here so the edge profile, which only uses the in-memory bus, never loads nats-py.
        from services.bus import nats as nats_bus

        return await nats_bus.connect(
            url, user=user, password=password, token=token, name=name, connect_timeout=connect_timeout
        )
    raise types.BusError(f"unsupported bus URL {redact_url(url)!r}: expected memory://, nats:// or tls://")


def redact_url(url: str) -> str:
    """``url`` with any password or token in its user part replaced by ``***``."""

    def hide(match: re.Match[str]) -> str:
        user, sep, _secret = match["userinfo"].partition(":")
        shown = f"{user}:***" if sep else "***"
        return f"{match['scheme']}{shown}@"

    return _USERINFO.sub(hide, url)
