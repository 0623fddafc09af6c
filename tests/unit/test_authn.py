"""Authentication: client certificates, static tokens, and service account JWTs."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwk, jwt

from services.apiserver.auth import authn, types
from services.machinery import errors
from supervisor import pki


def pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture
def key_pem(tmp_path: Path) -> bytes:
    return pki.ensure(tmp_path).service_key.read_bytes()  # the real service.key


@pytest.fixture
def signer(key_pem: bytes) -> authn.ServiceAccountTokens:
    return authn.ServiceAccountTokens(key_pem)


class Lookup:
    """What the API server knows: service accounts and pods by (namespace, name) -> uid."""

    def __init__(self) -> None:
        self.service_accounts = {("default", "builder"): "sa-uid"}
        self.pods = {("default", "web-1"): "pod-uid"}
        self.calls = 0

    async def service_account_uid(self, namespace: str, name: str) -> str | None:
        self.calls += 1
        return self.service_accounts.get((namespace, name))

    async def pod_uid(self, namespace: str, name: str) -> str | None:
        return self.pods.get((namespace, name))


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def bearer(token: str) -> types.Credentials:
    return types.Credentials(bearer_token=token)


# -- certificates and static tokens --------------------------------------------------------------


async def test_client_certificate_subject_is_the_user() -> None:
    auth = authn.Authenticator()
    user = await auth.authenticate(
        types.Credentials(cert_common_name="alice", cert_organizations=("dev", "ops"))
    )
    assert user == types.UserInfo(name="alice", groups=("dev", "ops", "system:authenticated"))


async def test_nothing_presented_is_nobody() -> None:
    assert await authn.Authenticator().authenticate(types.Credentials()) is None


async def test_empty_common_name_falls_through_to_the_token() -> None:
    auth = authn.Authenticator(tokens={"t0k": types.UserInfo(name="bob")})
    user = await auth.authenticate(types.Credentials(cert_common_name="", bearer_token="t0k"))
    assert user is not None and user.name == "bob"


async def test_static_tokens() -> None:
    tokens = authn.parse_token_file('t0k,bob,uid-1,"dev,ops"\n# comment\nother,carol,uid-2\n')
    auth = authn.Authenticator(tokens=tokens)
    user = await auth.authenticate(bearer("t0k"))
    assert user == types.UserInfo(name="bob", uid="uid-1", groups=("dev", "ops", "system:authenticated"))
    assert (await auth.authenticate(bearer("other"))).groups == ("system:authenticated",)  # type: ignore[union-attr]
    assert await auth.authenticate(bearer("wrong")) is None


def test_token_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "tokens.csv"
    path.write_text("good,user,uid\nbad\n")
    with pytest.raises(ValueError, match="line 2"):
        authn.load_token_file(path)


# -- service account tokens ---------------------------------------------------------------------


def test_issued_token_has_kubernetes_claims(signer: authn.ServiceAccountTokens) -> None:
    issued = signer.issue(
        namespace="default",
        name="builder",
        uid="sa-uid",
        bound=authn.BoundObject("Pod", "web-1", "pod-uid"),
        node=authn.BoundObject("Node", "n1", "node-uid"),
        expiration_seconds=3607,
    )
    claims = claims_of(issued.token)
    assert claims["iss"] == "https://kubernetes.default.svc.cluster.local"
    assert claims["sub"] == "system:serviceaccount:default:builder"
    assert claims["aud"] == ["https://kubernetes.default.svc.cluster.local", "k3s"]
    assert claims["exp"] - claims["iat"] == 3607 and claims["nbf"] == claims["iat"]
    assert claims["kubernetes.io"] == {
        "namespace": "default",
        "serviceaccount": {"name": "builder", "uid": "sa-uid"},
        "pod": {"name": "web-1", "uid": "pod-uid"},
        "node": {"name": "n1", "uid": "node-uid"},
    }
    assert claims["jti"]
    assert int(issued.expiration.timestamp()) == claims["exp"]
    header = json.loads(base64.urlsafe_b64decode(issued.token.split(".")[0] + "=="))
    assert header["alg"] == "ES256" and header["kid"]
    assert issued.token not in repr(issued)


async def test_service_account_token_authenticates(signer: authn.ServiceAccountTokens) -> None:
    token = authn.issue_service_account_token(signer, namespace="default", name="builder", uid="sa-uid").token
    user = await authn.Authenticator(service_accounts=signer).authenticate(bearer(token))
    assert user is not None
    assert user.name == "system:serviceaccount:default:builder"
    assert user.uid == "sa-uid"
    assert user.groups == ("system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated")
    assert user.extra[authn.EXTRA_CREDENTIAL_ID][0].startswith("JTI=")


async def test_bound_pod_appears_in_extra(signer: authn.ServiceAccountTokens) -> None:
    token = signer.issue(
        namespace="default", name="builder", uid="sa-uid", bound=authn.BoundObject("Pod", "web-1", "pod-uid")
    ).token
    user = await authn.Authenticator(service_accounts=signer, lookup=Lookup()).authenticate(bearer(token))
    assert user is not None
    assert user.extra[authn.EXTRA_POD_NAME] == ("web-1",) and user.extra[authn.EXTRA_POD_UID] == ("pod-uid",)


async def test_expired_token_is_rejected(signer: authn.ServiceAccountTokens) -> None:
    token = signer.issue(namespace="default", name="builder", uid="u", now=time.time() - 7200).token
    assert await authn.Authenticator(service_accounts=signer).authenticate(bearer(token)) is None


async def test_foreign_key_issuer_and_audience_are_rejected(
    signer: authn.ServiceAccountTokens, key_pem: bytes
) -> None:
    auth = authn.Authenticator(service_accounts=signer)
    foreign = authn.ServiceAccountTokens(pem(ec.generate_private_key(ec.SECP256R1())))
    other_issuer = authn.ServiceAccountTokens(key_pem, issuer="https://evil.example")
    for token in (
        foreign.issue(namespace="default", name="builder", uid="u").token,
        other_issuer.issue(namespace="default", name="builder", uid="u").token,
        signer.issue(namespace="default", name="builder", uid="u", audiences=["vault"]).token,
    ):
        assert await auth.authenticate(bearer(token)) is None


async def test_tampered_and_malformed_tokens_are_rejected(signer: authn.ServiceAccountTokens) -> None:
    auth = authn.Authenticator(service_accounts=signer)
    token = signer.issue(namespace="default", name="builder", uid="u").token
    header, payload, signature = token.split(".")
    claims = claims_of(token)
    claims["sub"] = "system:serviceaccount:kube-system:admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    for bad in (
        f"{header}.{forged}.{signature}",
        "a.b.c",
        "not-a-jwt",
        "..",
        f"{header}.{payload}.",
        "e30.e30.e30",
    ):
        assert await auth.authenticate(bearer(bad)) is None


async def test_odd_claim_types_are_rejected(key_pem: bytes) -> None:
    key = jwk.ECKey.import_key(key_pem)
    signer = authn.ServiceAccountTokens(key_pem)
    auth = authn.Authenticator(service_accounts=signer)
    now = int(time.time())
    base = {
        "iss": authn.ISSUER,
        "aud": ["k3s"],
        "exp": now + 600,
        "sub": "system:serviceaccount:a:b",
        "kubernetes.io": {"namespace": "a", "serviceaccount": {"name": "b", "uid": "u"}},
    }
    for change in (
        {"aud": [{"x": 1}]},
        {"exp": "soon"},
        {"kubernetes.io": []},
        {"sub": "system:admin"},
        {"nbf": now + 3600},
    ):
        token = jwt.encode({"alg": "ES256"}, {**base, **change}, key, algorithms=["ES256"])
        assert await auth.authenticate(bearer(token)) is None, change
    token = jwt.encode({"alg": "ES256"}, base, key, algorithms=["ES256"])  # no kid: every key is tried
    assert (await auth.authenticate(bearer(token))) is not None


async def test_unsigned_alg_none_is_rejected(signer: authn.ServiceAccountTokens) -> None:
    token = signer.issue(namespace="default", name="builder", uid="u").token
    none_header = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    forged = f"{none_header}.{token.split('.')[1]}."
    assert await authn.Authenticator(service_accounts=signer).authenticate(bearer(forged)) is None


async def test_rsa_signing_key_uses_rs256() -> None:
    signer = authn.ServiceAccountTokens(pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    token = signer.issue(namespace="ns", name="sa", uid="u").token
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["alg"] == "RS256"
    user = await authn.Authenticator(service_accounts=signer).authenticate(bearer(token))
    assert user is not None and user.name == "system:serviceaccount:ns:sa"


async def test_rotated_key_still_verifies_old_tokens(
    signer: authn.ServiceAccountTokens, key_pem: bytes
) -> None:
    old_token = signer.issue(namespace="default", name="builder", uid="u").token
    public = serialization.load_pem_private_key(key_pem, None).public_key()
    new = authn.ServiceAccountTokens(
        pem(ec.generate_private_key(ec.SECP256R1())),
        extra_public_keys=[
            public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        ],
    )
    assert new.verify(old_token) is not None
    assert len(new.jwks()["keys"]) == 2


async def test_deleted_service_account_or_pod_revokes(signer: authn.ServiceAccountTokens) -> None:
    lookup = Lookup()
    auth = authn.Authenticator(service_accounts=signer, lookup=lookup, cache_ttl=0)
    token = signer.issue(
        namespace="default", name="builder", uid="sa-uid", bound=authn.BoundObject("Pod", "web-1", "pod-uid")
    ).token
    assert await auth.authenticate(bearer(token)) is not None
    lookup.pods[("default", "web-1")] = "recreated-uid"
    assert await auth.authenticate(bearer(token)) is None
    lookup.pods[("default", "web-1")] = "pod-uid"
    del lookup.service_accounts[("default", "builder")]
    assert await auth.authenticate(bearer(token)) is None


async def test_from_data_dir_uses_service_key_and_token_file(tmp_path: Path) -> None:
    pki.ensure(tmp_path)
    token_file = tmp_path / "tokens.csv"
    token_file.write_text("t0k,bob,uid-1\n")
    auth = authn.Authenticator.from_data_dir(tmp_path, token_file=token_file)
    assert auth.service_accounts is not None
    issued = authn.issue_service_account_token(auth.service_accounts, namespace="ns", name="sa", uid="u")
    sa_user = await auth.authenticate(bearer(issued.token))
    static_user = await auth.authenticate(bearer("t0k"))
    assert sa_user is not None and sa_user.name == "system:serviceaccount:ns:sa"
    assert static_user is not None and static_user.name == "bob"


async def test_successes_are_cached(signer: authn.ServiceAccountTokens) -> None:
    lookup = Lookup()
    auth = authn.Authenticator(service_accounts=signer, lookup=lookup)
    token = signer.issue(namespace="default", name="builder", uid="sa-uid").token
    for _ in range(5):
        assert await auth.authenticate(bearer(token)) is not None
    assert lookup.calls == 1


def test_token_request_expiration_bounds(signer: authn.ServiceAccountTokens) -> None:
    with pytest.raises(errors.ApiError) as caught:
        signer.issue(namespace="default", name="builder", uid="u", expiration_seconds=599)
    assert caught.value.code == 422
    assert "spec.expirationSeconds" in caught.value.message and "10 minutes" in caught.value.message
    assert signer.issue(namespace="default", name="builder", uid="u", expiration_seconds=600).token


def test_key_id_is_stable(signer: authn.ServiceAccountTokens) -> None:
    kids = {json.loads(base64.urlsafe_b64decode(signer.issue(namespace="a", name="b", uid="c").token.split(".")[0] + "=="))["kid"] for _ in range(3)}  # fmt: skip
    assert len(kids) == 1 and "=" not in next(iter(kids))
