"""Join tokens in K3s's format, and the credentials file the supervisor's routes check them against.

A secure token is ``K10<ca hash>::<username>:<password>``: the hash (64 hex characters) is the
SHA-256 of the CA bundle exactly as ``/cacerts`` serves it, the PEM bytes of ``server-ca.crt``, so a
joining node can prove it reached the right cluster before it sends the password. A bare
``<password>`` (or ``<username>:<password>``) is the short form, trusted on first use.

What a server writes, as K3s does:

- ``server/token``: ``K10<hash>::server:<secret>``, 0600. The secret is ``--token`` when given (bare
  or in full form; a full token's hash must match this cluster's CA), else the one already stored,
  else 16 random bytes in hex. A ``--token`` that differs from the stored secret is refused: the
  token is the cluster's identity and changing it needs a deliberate rotation.
- ``server/node-token``: the legacy name, a symlink to ``token``.
- ``server/agent-token``: ``K10<hash>::node:<agent secret>`` when ``--agent-token`` is given, else
  a symlink to ``token`` (agents may then join with the server secret).
- ``server/cred/passwd``: one ``<password>,<user>,<uid>,<group>`` line per credential, 0600:
  ``server`` in group ``k3s:server`` with the server secret, ``node`` in group ``k3s:agent`` with
  the agent secret (the server secret when there is no agent token). The supervisor's
  ``/v1-k3s/*`` routes authenticate basic auth against it with ``Passwd.check``; the group decides
  the route (servers may do everything agents may). The file is the single place a running server
  reads credentials from, so rotating a token means rewriting it, never restarting with new flags.

The join token is not a Kubernetes API credential: nodes use it only towards ``/v1-k3s/*``, to
obtain their client certificates, and talk to the API with those.
"""

from __future__ import annotations

import dataclasses
import hmac
import os
import secrets
from pathlib import Path

from services.machinery.k3stoken import (  # noqa: F401 - re-exported: this module's public names
    AGENT_GROUP,
    AGENT_USER,
    PREFIX,
    SECRET_BYTES,
    SERVER_GROUP,
    SERVER_USER,
    Passwd,
    Token,
    TokenError,
    ca_hash,
    format_token,
    generate_secret,
    parse,
    read_token,
    verify_ca_hash,
)
from supervisor import pki

TOKEN_MODE = 0o600


@dataclasses.dataclass(frozen=True, slots=True)
class ServerTokens:
    server: Token  # K10<hash>::server:<secret>
    agent: Token  # K10<hash>::node:<agent secret, or the server secret>


# -- the data dir ------------------------------------------------------------------------------


def server_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "server"


def passwd_path(data_dir: Path) -> Path:
    return server_dir(data_dir) / "cred" / "passwd"


def ensure(
    data_dir: Path, *, ca_pem: bytes, token: str | None = None, agent_token: str | None = None
) -> ServerTokens:
    """Write ``token``, ``node-token``, ``agent-token`` and ``cred/passwd`` (see the module doc).

    ``ca_pem`` is the content of ``server-ca.crt``. Call it after ``pki.ensure``, under the same
    single-start discipline (the files are each replaced atomically).
    """
    directory = server_dir(data_dir)
    digest = ca_hash(ca_pem)
    server_secret = _secret(directory / "token", token, ca_pem=ca_pem, what="--token")
    server = Token(password=server_secret, username=SERVER_USER, ca_hash=digest)
    pki.write_atomic(directory / "token", (server.secure() + "\n").encode(), mode=TOKEN_MODE)
    _symlink(directory / "node-token", "token")
    if agent_token is not None:
        agent_secret = _secret(directory / "agent-token", agent_token, ca_pem=ca_pem, what="--agent-token")
        agent = Token(password=agent_secret, username=AGENT_USER, ca_hash=digest)
        pki.write_atomic(directory / "agent-token", (agent.secure() + "\n").encode(), mode=TOKEN_MODE)
    else:
        agent = Token(password=server_secret, username=AGENT_USER, ca_hash=digest)
        _symlink(directory / "agent-token", "token")
    passwd = Passwd(
        {
            SERVER_USER: (server.password, SERVER_GROUP),
            AGENT_USER: (agent.password, AGENT_GROUP),
        }
    )
    pki.write_atomic(passwd_path(data_dir), passwd.render().encode(), mode=TOKEN_MODE)
    return ServerTokens(server=server, agent=agent)


def _secret(path: Path, given: str | None, *, ca_pem: bytes, what: str) -> str:
    """The secret to keep: the given one (checked against the CA and the stored one) or the stored one."""
    stored: Token | None = None
    if path.exists() and not path.is_symlink():
        try:
            stored = read_token(path)
        except (TokenError, OSError) as exc:
            # Never replace a cluster's secret silently: agents joined with it.
            raise TokenError(
                f"{path} is unreadable or malformed; fix or remove it ({type(exc).__name__})"
            ) from None
    if given is None:
        return stored.password if stored is not None else generate_secret()
    parsed = parse(given)
    if parsed.ca_hash and not verify_ca_hash(parsed, ca_pem):
        raise TokenError(
            f"{what} carries a CA hash that does not match this server's CA ({path.parent / 'tls'})"
        )
    if stored is not None and not hmac.compare_digest(stored.password, parsed.password):
        raise TokenError(f"{what} does not match the token stored in {path}; rotate the token instead")
    return parsed.password


def _symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` (relative), replacing whatever is there in one rename."""
    if link.is_symlink() and os.readlink(link) == target:
        return
    tmp = link.parent / f".{link.name}.{secrets.token_hex(8)}.tmp"
    os.symlink(target, tmp)
    os.replace(tmp, link)
