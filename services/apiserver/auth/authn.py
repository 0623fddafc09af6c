"""Authentication: client certificates, static bearer tokens and service account tokens.

The methods are tried in kube-apiserver's order, the first that proves a user wins:

1. A client certificate. The TLS layer already verified it against ``client-ca`` (an unverified
   certificate never completes the handshake), so the subject is trusted as it is: CN is the user,
   each O a group. A certificate without a CN proves nothing and the bearer token is tried next.
2. A static bearer token from the map given at start (``load_token_file`` reads kube-apiserver's
   ``--token-auth-file`` CSV: ``token,user,uid,"group1,group2"``). The K3s join token is not an API
   credential: nodes only use it towards ``/v1-k3s/*`` (see ``supervisor.tokens``).
3. A service account token: a JWT signed with ``server/tls/service.key`` (ES256 for our EC key,
   RS256 for an RSA one), in kube-apiserver's bound-token shape: ``iss``, ``aud``, ``sub``
   ``system:serviceaccount:<ns>:<name>``, ``exp``/``iat``/``nbf``, ``jti`` and a ``kubernetes.io``
   claim with the namespace, the service account and the object it is bound to. It must be signed
   by one of our keys, issued by our issuer, for one of our audiences, and unexpired; with a
   ``ServiceAccountLookup`` the service account (and bound pod) must still exist with the same uid,
   so deleting either revokes its tokens. Legacy secret-based tokens are not accepted.

Every authenticated user also gets the group ``system:authenticated``. Successful token checks are
cached for ``cache_ttl`` seconds (10, as kube-apiserver's token cache), keyed by the token's
SHA-256, so a pod polling the API costs one dictionary lookup, not a signature check.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import datetime
import hashlib
import io
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import errors as jose_errors
from joserfc import jwk, jwt

from services.apiserver.auth import types
from services.machinery import errors

ISSUER = "https://kubernetes.default.svc.cluster.local"
AUDIENCES = ("https://kubernetes.default.svc.cluster.local", "k3s")  # K3s's --api-audiences
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
ANONYMOUS = types.UserInfo(name="system:anonymous", groups=(UNAUTHENTICATED,))
SA_PREFIX = "system:serviceaccount:"
SA_GROUP = "system:serviceaccounts"
MIN_EXPIRATION = 600  # TokenRequest's floor, seconds
MAX_EXPIRATION = 2**32
DEFAULT_EXPIRATION = 3600
CLOCK_SKEW = 60  # seconds a token's iat/nbf may lie in our future
CACHE_TTL = 10.0
CACHE_SIZE = 4096

EXTRA_POD_NAME = "authentication.kubernetes.io/pod-name"
EXTRA_POD_UID = "authentication.kubernetes.io/pod-uid"
EXTRA_NODE_NAME = "authentication.kubernetes.io/node-name"
EXTRA_NODE_UID = "authentication.kubernetes.io/node-uid"
EXTRA_CREDENTIAL_ID = "authentication.kubernetes.io/credential-id"


class ServiceAccountLookup(Protocol):
    """What the API server knows now; None when the object does not exist."""

    async def service_account_uid(self, namespace: str, name: str) -> str | None: ...

    async def pod_uid(self, namespace: str, name: str) -> str | None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class BoundObject:
    """The object a token is bound to (TokenRequest's ``boundObjectRef``)."""

    kind: str  # Pod, Secret or Node
    name: str
    uid: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str = dataclasses.field(repr=False)
    expiration: datetime.datetime


def service_account_username(namespace: str, name: str) -> str:
    return f"{SA_PREFIX}{namespace}:{name}"


def with_authenticated(user: types.UserInfo) -> types.UserInfo:
    if AUTHENTICATED in user.groups:
        return user
    return dataclasses.replace(user, groups=(*user.groups, AUTHENTICATED))


# -- static tokens ----------------------------------------------------------------------------------


def parse_token_file(text: str) -> dict[str, types.UserInfo]:
    """kube-apiserver's ``--token-auth-file``: ``token,user,uid[,"group1,group2"]`` per line."""
    tokens: dict[str, types.UserInfo] = {}
    for number, row in enumerate(csv.reader(io.StringIO(text)), 1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 3 or not row[0].strip() or not row[1].strip():
            raise ValueError(f"token file line {number}: want token,user,uid[,groups]")
        groups = tuple(g.strip() for g in row[3].split(",") if g.strip()) if len(row) > 3 else ()
        tokens[row[0].strip()] = types.UserInfo(name=row[1].strip(), uid=row[2].strip(), groups=groups)
    return tokens


def load_token_file(path: Path) -> dict[str, types.UserInfo]:
    return parse_token_file(Path(path).read_text())


# -- service account tokens ---------------------------------------------------------------------


class ServiceAccountTokens:
    """Issues and verifies service account JWTs with the cluster's ``service.key``.

    ``extra_public_keys`` (PEM) verify tokens signed by earlier keys, so a key rotation does not
    cut off every running pod at once.
    """

    def __init__(
        self,
        signing_key_pem: bytes,
        *,
        issuer: str = ISSUER,
        audiences: Sequence[str] = AUDIENCES,
        extra_public_keys: Sequence[bytes] = (),
    ) -> None:
        private = serialization.load_pem_private_key(signing_key_pem, password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError("service account keys must be EC P-256 or RSA")
        self.issuer = issuer
        self.audiences = tuple(audiences)
        self._algorithm, self._signing_key = _jose_key(private)
        self._kid = key_id(private.public_key())
        self._verifiers: dict[str, tuple[str, jwk.ECKey | jwk.RSAKey]] = {
            self._kid: _jose_key(private.public_key())
        }
        for pem in extra_public_keys:
            public = serialization.load_pem_public_key(pem)
            if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
                raise ValueError("service account keys must be EC P-256 or RSA")
            self._verifiers[key_id(public)] = _jose_key(public)

    @classmethod
    def from_file(cls, path: Path, **kwargs: Any) -> ServiceAccountTokens:
        return cls(Path(path).read_bytes(), **kwargs)

    def issue(
        self,
        *,
        namespace: str,
        name: str,
        uid: str,
        audiences: Sequence[str] = (),
        expiration_seconds: int = DEFAULT_EXPIRATION,
        bound: BoundObject | None = None,
        node: BoundObject | None = None,
        now: float | None = None,
    ) -> IssuedToken:
        """A token as TokenRequest returns it; raises a 422 ``ApiError`` for a bad expiration.

        ``audiences`` defaults to the API server's own; ``node`` is the node of a bound pod.
        """
        _check_expiration(name, expiration_seconds)
        issued = int(time.time() if now is None else now)
        expires = issued + expiration_seconds
        private: dict[str, Any] = {
            "namespace": namespace,
            "serviceaccount": {"name": name, "uid": uid},
        }
        if bound is not None:
            private[bound.kind.lower()] = {"name": bound.name, "uid": bound.uid}
        if node is not None:
            private["node"] = {"name": node.name, "uid": node.uid}
        claims = {
            "aud": list(audiences or self.audiences),
            "exp": expires,
            "iat": issued,
            "iss": self.issuer,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": private,
            "nbf": issued,
            "sub": service_account_username(namespace, name),
        }
        header = {"alg": self._algorithm, "kid": self._kid}
        token = jwt.encode(header, claims, self._signing_key, algorithms=[self._algorithm], default_type=None)
        return IssuedToken(token=token, expiration=datetime.datetime.fromtimestamp(expires, datetime.UTC))

    def verify(self, token: str, *, now: float | None = None) -> dict[str, Any] | None:
        """The claims of a token we signed, for us, still valid; None for anything else."""
        if token.count(".") != 2:
            return None
        try:
            kid = _header(token).get("kid")
        except (ValueError, TypeError):
            return None
        if not isinstance(kid, str | None):
            return None
        # A token names its key; one without a kid is tried against each key we have.
        candidates = (
            [self._verifiers[kid]] if kid in self._verifiers else [] if kid else self._verifiers.values()
        )
        for algorithm, key in candidates:
            try:
                claims = jwt.decode(token, key, algorithms=[algorithm]).claims
            except (jose_errors.JoseError, ValueError, TypeError):
                continue
            return claims if self._claims_valid(claims, now=time.time() if now is None else now) else None
        return None

    def jwks(self) -> dict[str, Any]:
        """The public keys as a JWK set (for ``/openid/v1/jwks``)."""
        keys = []
        for kid, (algorithm, key) in self._verifiers.items():
            keys.append({**key.as_dict(private=False), "kid": kid, "alg": algorithm, "use": "sig"})
        return {"keys": keys}

    def _claims_valid(self, claims: Mapping[str, Any], *, now: float) -> bool:
        if claims.get("iss") != self.issuer:
            return False
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(isinstance(a, str) and a in self.audiences for a in auds):
            return False
        exp, nbf = claims.get("exp"), claims.get("nbf", 0)
        if not isinstance(exp, int | float) or exp <= now:
            return False
        if not isinstance(nbf, int | float) or nbf > now + CLOCK_SKEW:
            return False
        private = claims.get("kubernetes.io")
        if not isinstance(private, dict) or not isinstance(private.get("serviceaccount"), dict):
            return False
        sub = service_account_username(
            str(private.get("namespace", "")), str(private["serviceaccount"].get("name", ""))
        )
        return claims.get("sub") == sub


def issue_service_account_token(
    tokens: ServiceAccountTokens,
    *,
    namespace: str,
    name: str,
    uid: str,
    audiences: Sequence[str] = (),
    expiration_seconds: int = DEFAULT_EXPIRATION,
    bound: BoundObject | None = None,
    node: BoundObject | None = None,
) -> IssuedToken:
    """The TokenRequest subresource's work: ``tokens.issue`` under the name the handlers call."""
    return tokens.issue(
        namespace=namespace,
        name=name,
        uid=uid,
        audiences=audiences,
        expiration_seconds=expiration_seconds,
        bound=bound,
        node=node,
    )


def key_id(public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> str:
    """kube-apiserver's ``kid``: base64url SHA-256 of the DER public key, unpadded."""
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def user_from_claims(claims: Mapping[str, Any]) -> types.UserInfo:
    private = claims["kubernetes.io"]
    namespace = str(private["namespace"])
    sa = private["serviceaccount"]
    extra: dict[str, tuple[str, ...]] = {}
    if isinstance(private.get("pod"), dict):
        extra[EXTRA_POD_NAME] = (str(private["pod"].get("name", "")),)
        extra[EXTRA_POD_UID] = (str(private["pod"].get("uid", "")),)
    if isinstance(private.get("node"), dict):
        extra[EXTRA_NODE_NAME] = (str(private["node"].get("name", "")),)
        extra[EXTRA_NODE_UID] = (str(private["node"].get("uid", "")),)
    if claims.get("jti"):
        extra[EXTRA_CREDENTIAL_ID] = (f"JTI={claims['jti']}",)
    return types.UserInfo(
        name=service_account_username(namespace, str(sa["name"])),
        uid=str(sa.get("uid", "")),
        groups=(SA_GROUP, f"{SA_GROUP}:{namespace}", AUTHENTICATED),
        extra=extra,
    )


# -- the authenticator --------------------------------------------------------------------------


class Authenticator:
    """``types.Authenticator`` over client certificates, static tokens and service account tokens."""

    def __init__(
        self,
        *,
        tokens: Mapping[str, types.UserInfo] | None = None,
        service_accounts: ServiceAccountTokens | None = None,
        lookup: ServiceAccountLookup | None = None,
        cache_ttl: float = CACHE_TTL,
    ) -> None:
        self._tokens = dict(tokens or {})
        self._service_accounts = service_accounts
        self._lookup = lookup
        self._cache_ttl = cache_ttl
        self._cache: dict[bytes, tuple[types.UserInfo, float]] = {}

    @classmethod
    def from_data_dir(
        cls,
        data_dir: Path,
        *,
        token_file: Path | None = None,
        lookup: ServiceAccountLookup | None = None,
        issuer: str = ISSUER,
        audiences: Sequence[str] = AUDIENCES,
    ) -> Authenticator:
        """Service account tokens signed with ``<data-dir>/server/tls/service.key``, static tokens
        from ``token_file`` when given (kube-apiserver's ``--token-auth-file``)."""
        key = Path(data_dir) / "server" / "tls" / "service.key"
        service_accounts = ServiceAccountTokens.from_file(key, issuer=issuer, audiences=audiences)
        tokens = load_token_file(token_file) if token_file is not None else {}
        return cls(tokens=tokens, service_accounts=service_accounts, lookup=lookup)

    @property
    def service_accounts(self) -> ServiceAccountTokens | None:
        """The signer, for the TokenRequest subresource (``issue_service_account_token``)."""
        return self._service_accounts

    async def authenticate(self, credentials: types.Credentials) -> types.UserInfo | None:
        if credentials.cert_common_name:
            return with_authenticated(
                types.UserInfo(
                    name=credentials.cert_common_name, groups=tuple(credentials.cert_organizations)
                )
            )
        token = credentials.bearer_token
        if not token:
            return None
        if (user := self._tokens.get(token)) is not None:
            return with_authenticated(user)
        return await self._service_account(token)

    async def _service_account(self, token: str) -> types.UserInfo | None:
        if self._service_accounts is None:
            return None
        digest = hashlib.sha256(token.encode()).digest()
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None:
            if cached[1] > now:
                return cached[0]
            del self._cache[digest]
        wall = time.time()
        claims = self._service_accounts.verify(token, now=wall)
        if claims is None or not await self._still_bound(claims):
            return None
        user = user_from_claims(claims)
        if self._cache_ttl > 0:
            if len(self._cache) >= CACHE_SIZE:
                del self._cache[next(iter(self._cache))]  # the oldest entry (dicts keep insertion order)
            self._cache[digest] = (user, now + min(self._cache_ttl, claims["exp"] - wall))
        return user

    async def _still_bound(self, claims: Mapping[str, Any]) -> bool:
        """With a lookup, the service account and a bound pod must still exist, with the same uids."""
        if self._lookup is None:
            return True
        private = claims["kubernetes.io"]
        namespace = str(private["namespace"])
        sa = private["serviceaccount"]
        uid = await self._lookup.service_account_uid(namespace, str(sa.get("name", "")))
        if uid is None or (sa.get("uid") and uid != sa["uid"]):
            return False
        pod = private.get("pod")
        if isinstance(pod, dict):
            pod_uid = await self._lookup.pod_uid(namespace, str(pod.get("name", "")))
            if pod_uid is None or (pod.get("uid") and pod_uid != pod["uid"]):
                return False
        return True


# -- internals ----------------------------------------------------------------------------------


def _jose_key(
    key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey | rsa.RSAPrivateKey | rsa.RSAPublicKey,
) -> tuple[str, jwk.ECKey | jwk.RSAKey]:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if key.curve.name != "secp256r1":
            raise ValueError(f"service account keys must be P-256 or RSA, not {key.curve.name}")
        return "ES256", jwk.ECKey.import_key(key)
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RS256", jwk.RSAKey.import_key(key)
    raise ValueError("service account keys must be EC P-256 or RSA")


def _header(token: str) -> dict[str, Any]:
    segment = token.split(".", 1)[0]
    decoded = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    if not isinstance(decoded, dict):
        raise ValueError("JWT header is not an object")
    return decoded


def _check_expiration(name: str, seconds: int) -> None:
    if seconds < MIN_EXPIRATION:
        message = f"Invalid value: {seconds}: may not specify a duration less than 10 minutes"
    elif seconds > MAX_EXPIRATION:
        message = f"Invalid value: {seconds}: may not specify a duration larger than 2^32 seconds"
    else:
        return
    cause = errors.Cause("FieldValueInvalid", message, "spec.expirationSeconds")
    raise errors.invalid("TokenRequest", name, [cause], group="authentication.k8s.io")
