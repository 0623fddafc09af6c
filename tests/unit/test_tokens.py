"""Join tokens: K3s's format, the CA hash, the files a server writes, and the credentials check."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from supervisor import pki, tokens

HASH = "a" * 64


@pytest.fixture
def ca_pem(tmp_path: Path) -> bytes:
    files = pki.ensure(tmp_path)
    return files.crt(pki.SERVER_CA).read_bytes()


# -- format ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ca_hash", "username", "password"),
    [
        (f"K10{HASH}::server:s3cret", HASH, "server", "s3cret"),
        (f"K10{HASH}::node:pass:with:colons", HASH, "node", "pass:with:colons"),
        (f"K10{HASH}::abcdef.0123456789abcdef", HASH, "", "abcdef.0123456789abcdef"),
        ("s3cret", "", "", "s3cret"),
        ("user:pw", "", "user", "pw"),
        ("  s3cret\n", "", "", "s3cret"),
        (f"K10{HASH.upper()}::server:x", HASH, "server", "x"),
    ],
)
def test_parse(text: str, ca_hash: str, username: str, password: str) -> None:
    token = tokens.parse(text)
    assert (token.ca_hash, token.username, token.password) == (ca_hash, username, password)


@pytest.mark.parametrize("text", ["", "   ", "K10abc::server:x", f"K10{HASH}::server:", "user:"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(tokens.TokenError):
        tokens.parse(text)


def test_round_trip_and_repr_hides_the_password() -> None:
    text = tokens.format_token(ca_hash=HASH, username="server", password="s3cret")
    assert text == f"K10{HASH}::server:s3cret"
    token = tokens.parse(text)
    assert token.secure() == text
    assert token.secure(username="node") == f"K10{HASH}::node:s3cret"
    assert "s3cret" not in repr(token)


def test_ca_hash_is_sha256_of_the_bundle(ca_pem: bytes) -> None:
    assert tokens.ca_hash(ca_pem) == hashlib.sha256(ca_pem).hexdigest()


def test_verify_ca_hash(ca_pem: bytes) -> None:
    good = tokens.format_token(ca_hash=tokens.ca_hash(ca_pem), username="node", password="x")
    assert tokens.verify_ca_hash(good, ca_pem)
    assert not tokens.verify_ca_hash(f"K10{HASH}::node:x", ca_pem)
    assert not tokens.verify_ca_hash(good, ca_pem + b"\n")  # byte-exact, as served
    assert tokens.verify_ca_hash("x", ca_pem)  # short form: nothing to check (trust on first use)


def test_verify_ca_hash_accepts_the_root_fingerprint(ca_pem: bytes) -> None:
    der = x509.load_pem_x509_certificate(ca_pem).public_bytes(serialization.Encoding.DER)
    assert tokens.verify_ca_hash(f"K10{hashlib.sha256(der).hexdigest()}::node:x", ca_pem)


# -- files ----------------------------------------------------------------------------------------


def test_first_start_generates_and_writes(tmp_path: Path, ca_pem: bytes) -> None:
    written = tokens.ensure(tmp_path, ca_pem=ca_pem)
    server = tmp_path / "server"
    text = (server / "token").read_text().strip()
    assert text == written.server.secure()
    assert text.startswith(f"K10{tokens.ca_hash(ca_pem)}::server:")
    assert len(written.server.password) == 32
    assert stat.S_IMODE((server / "token").stat().st_mode) == 0o600
    assert os.readlink(server / "node-token") == "token"
    assert os.readlink(server / "agent-token") == "token"
    assert (server / "node-token").read_text() == (server / "token").read_text()
    assert stat.S_IMODE((server / "cred" / "passwd").stat().st_mode) == 0o600


def test_restart_keeps_the_secret(tmp_path: Path, ca_pem: bytes) -> None:
    first = tokens.ensure(tmp_path, ca_pem=ca_pem)
    again = tokens.ensure(tmp_path, ca_pem=ca_pem)
    assert again.server.password == first.server.password


def test_given_token_bare_or_full(tmp_path: Path, ca_pem: bytes) -> None:
    assert tokens.ensure(tmp_path, ca_pem=ca_pem, token="mysecret").server.password == "mysecret"
    full = tokens.format_token(ca_hash=tokens.ca_hash(ca_pem), username="server", password="mysecret")
    assert tokens.ensure(tmp_path, ca_pem=ca_pem, token=full).server.password == "mysecret"


def test_token_for_another_ca_is_refused(tmp_path: Path, ca_pem: bytes) -> None:
    with pytest.raises(tokens.TokenError, match="CA hash") as caught:
        tokens.ensure(tmp_path, ca_pem=ca_pem, token=f"K10{HASH}::server:mysecret")
    assert "mysecret" not in str(caught.value)


def test_changed_token_is_refused(tmp_path: Path, ca_pem: bytes) -> None:
    tokens.ensure(tmp_path, ca_pem=ca_pem, token="first")
    with pytest.raises(tokens.TokenError, match="does not match") as caught:
        tokens.ensure(tmp_path, ca_pem=ca_pem, token="second")
    assert "first" not in str(caught.value) and "second" not in str(caught.value)


def test_agent_token_gets_its_own_file(tmp_path: Path, ca_pem: bytes) -> None:
    written = tokens.ensure(tmp_path, ca_pem=ca_pem, token="srv", agent_token="agt")
    agent_file = tmp_path / "server" / "agent-token"
    assert not agent_file.is_symlink()
    assert tokens.read_token(agent_file) == tokens.Token(
        password="agt", username="node", ca_hash=tokens.ca_hash(ca_pem)
    )
    assert written.agent.password == "agt"


def test_passwd_checks_server_and_agent(tmp_path: Path, ca_pem: bytes) -> None:
    tokens.ensure(tmp_path, ca_pem=ca_pem, token="srv", agent_token="agt")
    passwd = tokens.Passwd.load(tokens.passwd_path(tmp_path))
    assert passwd.check("server", "srv") == "k3s:server"
    assert passwd.check("node", "agt") == "k3s:agent"
    assert passwd.check("node", "srv") is None
    assert passwd.check("server", "agt") is None
    assert passwd.check("nobody", "srv") is None
    assert "srv" not in repr(passwd)


def test_without_agent_token_agents_use_the_server_secret(tmp_path: Path, ca_pem: bytes) -> None:
    tokens.ensure(tmp_path, ca_pem=ca_pem, token="srv")
    passwd = tokens.Passwd.load(tokens.passwd_path(tmp_path))
    assert passwd.check("node", "srv") == "k3s:agent"


def test_passwd_format_is_k3s(tmp_path: Path, ca_pem: bytes) -> None:
    tokens.ensure(tmp_path, ca_pem=ca_pem, token="srv")
    lines = tokens.passwd_path(tmp_path).read_text().splitlines()
    assert lines == ["srv,server,server,k3s:server", "srv,node,node,k3s:agent"]
    with pytest.raises(tokens.TokenError):
        tokens.Passwd.parse("only,three,fields\n")


def test_malformed_stored_token_is_never_replaced_silently(tmp_path: Path, ca_pem: bytes) -> None:
    (tmp_path / "server" / "token").write_text("\n")
    with pytest.raises(tokens.TokenError, match="malformed"):
        tokens.ensure(tmp_path, ca_pem=ca_pem)
