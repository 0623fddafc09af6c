"""services.machinery.k3stoken: the token format and CA hash, shared by the supervisor and services."""

from __future__ import annotations

import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.machinery import certs, k3stoken
from supervisor import tokens

HASH = "b" * 64


@pytest.fixture(scope="module")
def ca_pem() -> bytes:
    return certs.generate_ca("k3s-server-ca").cert_pem()


def test_parse_every_form() -> None:
    assert k3stoken.parse(f"K10{HASH}::node:s3cret") == k3stoken.Token(
        password="s3cret", username="node", ca_hash=HASH
    )
    assert k3stoken.parse(f"K10{HASH.upper()}::s3cret").ca_hash == HASH
    assert k3stoken.parse("server:s3cret") == k3stoken.Token(password="s3cret", username="server")
    assert k3stoken.parse("  s3cret\n") == k3stoken.Token(password="s3cret")


@pytest.mark.parametrize("text", ["", "   ", "K10abc::node:x", f"K10{HASH}::node:", "user:"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(k3stoken.TokenError):
        k3stoken.parse(text)


def test_secure_form_and_repr_hides_the_password() -> None:
    token = k3stoken.Token(password="s3cret", username="node", ca_hash=HASH)
    assert token.secure() == f"K10{HASH}::node:s3cret"
    assert token.secure(ca_hash="", username="") == "s3cret"
    assert "s3cret" not in repr(token)


def test_ca_hash_matches_the_bundle_or_its_root(ca_pem: bytes) -> None:
    assert k3stoken.verify_ca_hash(f"K10{hashlib.sha256(ca_pem).hexdigest()}::node:x", ca_pem)
    # The DER fingerprint of the root, as K3s accepts for custom CAs.
    der = x509.load_pem_x509_certificate(ca_pem).public_bytes(serialization.Encoding.DER)
    assert k3stoken.verify_ca_hash(f"K10{hashlib.sha256(der).hexdigest()}::node:x", ca_pem)
    assert not k3stoken.verify_ca_hash(f"K10{HASH}::node:x", ca_pem)
    assert k3stoken.verify_ca_hash("just-a-secret", ca_pem)  # nothing to check: trust on first use


def test_passwd_round_trip_and_check() -> None:
    passwd = k3stoken.Passwd({"server": ("a", k3stoken.SERVER_GROUP), "node": ("b", k3stoken.AGENT_GROUP)})
    again = k3stoken.Passwd.parse(passwd.render())
    assert again.check("node", "b") == "k3s:agent"
    assert again.check("server", "a") == "k3s:server"
    assert again.check("node", "a") is None and again.check("nobody", "b") is None
    assert "a" not in repr(again).replace("Passwd", "").replace("users", "")


def test_supervisor_tokens_reexports_the_same_objects() -> None:
    assert tokens.Token is k3stoken.Token and tokens.Passwd is k3stoken.Passwd
    assert tokens.parse is k3stoken.parse and tokens.TokenError is k3stoken.TokenError
