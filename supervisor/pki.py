"""The cluster's PKI: K3s's CAs and certificates under ``<data-dir>/server/tls``.

File names and subjects are K3s's, so operators' habits and scripts keep working:

- three CAs, valid 10 years and never renewed automatically (renewing one would change the token's
  CA hash and strand every joined agent): ``server-ca`` signs serving certificates, ``client-ca``
  signs client certificates (CN = user, O = groups), ``request-header-ca`` signs the auth proxy's;
- ``service.key``, which signs service account tokens (never rotated: that would invalidate every
  token in flight);
- the leaves in ``LEAVES``, valid 365 days and re-issued at start when missing, expired, within 90
  days of expiry, not signed by the current CA, for a different subject, or (the apiserver's serving
  certificate) lacking a wanted SAN. A renewal keeps the key; ``rotate`` makes new keys too.

Every key is EC P-256: generating one costs microseconds where RSA-2048 costs tens of milliseconds,
and a first start must stay well under the 2 s promise. Go, OpenSSL and every Kubernetes client
accept P-256, and service account tokens are then ES256, which kube-apiserver supports as well.

A leaf's ``.crt`` holds the leaf followed by its CA, as K3s writes them. Keys are 0600, certificates
0644. Every file is written to a temporary name, fsynced and renamed, so a crash never leaves half a
file; a lock file serialises whole runs, so two processes starting at once never pair one's key with
the other's certificate. On load a key that does not match its certificate (a crash between the two
renames) counts as missing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

# The issuing primitives live in services.machinery.certs (the API server issues node certificates
# too); they are re-exported here so that this module's public names keep working.
from services.machinery.certs import (  # noqa: F401
    BACKDATE,
    CA_DAYS,
    LEAF_DAYS,
    KeyPair,
    PrivateKey,
    PublicKey,
    SubjectAltNames,
    _builder,
    _key_usage,
    _leaf_builder,
    _now,
    _sans,
    generate_ca,
    generate_key,
    issue_client_cert,
    issue_serving_cert,
)

logger = logging.getLogger(__name__)

RENEW_BEFORE = datetime.timedelta(days=90)  # K3s renews leaves this long before they expire
DEFAULT_SERVICE_IP = "10.43.0.1"  # the `kubernetes` Service: first address of 10.43.0.0/16
DEFAULT_CLUSTER_DOMAIN = "cluster.local"

KEY_MODE = 0o600
CERT_MODE = 0o644
DIR_MODE = 0o700
LOCK_FILE = ".lock"

SERVER_CA = "server-ca"
CLIENT_CA = "client-ca"
REQUEST_HEADER_CA = "request-header-ca"
SERVICE_KEY = "service.key"
SERVING_APISERVER = "serving-kube-apiserver"
CLIENT_ADMIN = "client-admin"


class PkiError(Exception):
    """A PKI request the user has to fix (for example an unknown service to rotate)."""


@dataclasses.dataclass(frozen=True, slots=True)
class LeafSpec:
    """One leaf certificate K3s keeps in ``server/tls``: file stem, signer, subject, rotate service."""

    stem: str
    ca: str
    common_name: str
    organizations: tuple[str, ...] = ()
    serving: bool = False
    service: str = ""  # the name `k3s certificate rotate --service` knows it by
    client_auth: bool = False  # a serving certificate also used to dial peers (NATS routes)


CAS: dict[str, str] = {
    SERVER_CA: "k3s-server-ca",
    CLIENT_CA: "k3s-client-ca",
    REQUEST_HEADER_CA: "k3s-request-header-ca",
}

LEAVES: tuple[LeafSpec, ...] = (
    LeafSpec(CLIENT_ADMIN, CLIENT_CA, "system:admin", ("system:masters",), service="admin"),
    LeafSpec(
        "client-supervisor", CLIENT_CA, "system:k3s-supervisor", ("system:masters",), service="k3s-server"
    ),
    LeafSpec(
        "client-kube-apiserver", CLIENT_CA, "system:apiserver", ("system:masters",), service="api-server"
    ),
    LeafSpec("client-scheduler", CLIENT_CA, "system:kube-scheduler", service="scheduler"),
    LeafSpec("client-controller", CLIENT_CA, "system:kube-controller-manager", service="controller-manager"),
    LeafSpec("client-k3s-controller", CLIENT_CA, "system:k3s-controller", service="k3s-controller"),
    LeafSpec(
        "client-k3s-cloud-controller", CLIENT_CA, "k3s-cloud-controller-manager", service="cloud-controller"
    ),
    LeafSpec("client-kube-proxy", CLIENT_CA, "system:kube-proxy", service="kube-proxy"),
    LeafSpec("client-auth-proxy", REQUEST_HEADER_CA, "system:auth-proxy", service="auth-proxy"),
    LeafSpec(SERVING_APISERVER, SERVER_CA, "kube-apiserver", serving=True, service="api-server"),
)

SERVICES: frozenset[str] = frozenset(spec.service for spec in LEAVES)

# The NATS route certificate: only servers that route to others need one, and its SANs are the route
# address, not the API server's, so it is issued by ``ensure_route_cert`` rather than with LEAVES.
# nats-server presents the same certificate when it accepts a route and when it dials one.
NATS_ROUTE = "serving-nats-route"
NATS_ROUTE_LEAF = LeafSpec(NATS_ROUTE, SERVER_CA, "k3s-nats-route", serving=True, client_auth=True)


@dataclasses.dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where the files live: ``crt("client-admin")`` -> ``<dir>/client-admin.crt``."""

    directory: Path

    def crt(self, stem: str) -> Path:
        return self.directory / f"{stem}.crt"

    def key(self, stem: str) -> Path:
        return self.directory / f"{stem}.key"

    @property
    def service_key(self) -> Path:
        return self.directory / SERVICE_KEY


def tls_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "server" / "tls"


# -- issuing ------------------------------------------------------------------------------------


def apiserver_sans(
    *,
    node_ips: Iterable[str] = (),
    tls_sans: Iterable[str] = (),
    node_name: str = "",
    service_ip: str = DEFAULT_SERVICE_IP,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
) -> SubjectAltNames:
    """What the apiserver's serving certificate must name (K3s's list, plus ``--tls-san``)."""
    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    dns.append(f"kubernetes.default.svc.{cluster_domain}")
    if node_name:
        dns.append(node_name)
    return _sans(dns, ["127.0.0.1", "::1", service_ip, *node_ips], extra=tls_sans)


# -- the data dir ------------------------------------------------------------------------------


def ensure(
    data_dir: Path,
    *,
    node_ips: Iterable[str] = (),
    tls_sans: Iterable[str] = (),
    node_name: str = "",
    service_ip: str = DEFAULT_SERVICE_IP,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
    now: datetime.datetime | None = None,
) -> TlsFiles:
    """Create what is missing and renew what is due; cheap and silent when everything is in order.

    Blocking file I/O (a few milliseconds); call it before the event loop or through a thread.
    """
    sans = apiserver_sans(
        node_ips=node_ips,
        tls_sans=tls_sans,
        node_name=node_name,
        service_ip=service_ip,
        cluster_domain=cluster_domain,
    )
    files = TlsFiles(tls_dir(data_dir))
    with _locked(files):
        _ensure_all(files, sans, rotate=frozenset(), now=now)
    return files


def rotate(
    data_dir: Path,
    *,
    services: Iterable[str] = (),
    node_ips: Iterable[str] = (),
    tls_sans: Iterable[str] = (),
    node_name: str = "",
    service_ip: str = DEFAULT_SERVICE_IP,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
    now: datetime.datetime | None = None,
) -> list[str]:
    """Re-issue leaves with new keys (all, or those of the named services), after a backup.

    As ``k3s certificate rotate``: the old directory is copied to ``server/tls-<unix time>`` first,
    CAs and ``service.key`` stay. Returns the stems re-issued. Components pick the new files up
    when they restart.
    """
    wanted = set(services)
    if unknown := wanted - SERVICES:
        raise PkiError(
            f"unknown service(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(SERVICES))}"
        )
    sans = apiserver_sans(
        node_ips=node_ips,
        tls_sans=tls_sans,
        node_name=node_name,
        service_ip=service_ip,
        cluster_domain=cluster_domain,
    )
    files = TlsFiles(tls_dir(data_dir))
    rotated = [spec.stem for spec in LEAVES if not wanted or spec.service in wanted]
    with _locked(files):
        _backup(files, now=now)
        _ensure_all(files, sans, rotate=frozenset(rotated), now=now)
    logger.info("rotated certificates: %s", ", ".join(rotated))
    return rotated


def ensure_route_cert(data_dir: Path, *, host: str, now: datetime.datetime | None = None) -> TlsFiles:
    """The NATS route certificate for ``host`` (an IP or a name), from the server CA the cluster shares.

    Issued or renewed on the same rules as the other leaves (missing, expiring, another CA, another
    host); the server CA must already be there (``ensure`` first).
    """
    files = TlsFiles(tls_dir(data_dir))
    with _locked(files):
        ca = load(files, SERVER_CA)
        _ensure_leaf(files, NATS_ROUTE_LEAF, ca, _sans([], [], extra=[host]), now=now, force=False)
    return files


def load(files: TlsFiles, stem: str) -> KeyPair:
    """The pair ``<stem>.crt`` / ``<stem>.key`` (for example a CA, to sign node certificates)."""
    pair = _load_pair(files, stem)
    if pair is None:
        raise PkiError(f"{files.crt(stem)} and {files.key(stem)} are missing or do not match")
    return pair


def load_private_key(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PkiError(f"{path}: only EC and RSA keys are supported")
    return key


def write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    """Replace ``path`` with ``data`` all at once: readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # before the data, so a key is never readable by others
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def needs_renewal(cert: x509.Certificate, *, now: datetime.datetime | None = None) -> bool:
    now = now or _now()
    return cert.not_valid_after_utc - now < RENEW_BEFORE or cert.not_valid_before_utc > now


# -- internals ----------------------------------------------------------------------------------


def _cert_sans(cert: x509.Certificate) -> SubjectAltNames:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return SubjectAltNames()
    return SubjectAltNames(
        tuple(ext.get_values_for_type(x509.DNSName)), tuple(ext.get_values_for_type(x509.IPAddress))
    )


def _subject_of(cert: x509.Certificate) -> tuple[str, tuple[str, ...]]:
    cn = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return (str(cn[0]) if cn else "", tuple(sorted(str(o) for o in orgs)))


def _public_der(key: PrivateKey | x509.Certificate) -> bytes:
    public = key.public_key()
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _load_pair(files: TlsFiles, stem: str) -> KeyPair | None:
    """The stored pair, or None when a file is missing, unreadable, or the key is not the cert's."""
    try:
        certs = x509.load_pem_x509_certificates(files.crt(stem).read_bytes())
        key = load_private_key(files.key(stem))
    except (OSError, ValueError, PkiError):
        return None
    if _public_der(key) != _public_der(certs[0]):
        return None
    return KeyPair(certs[0], key, tuple(certs[1:]))


def _write_pair(files: TlsFiles, stem: str, pair: KeyPair, *, key_changed: bool) -> None:
    # The key first: a crash between the two renames leaves a mismatch, which loads as missing.
    if key_changed:
        write_atomic(files.key(stem), pair.key_pem(), mode=KEY_MODE)
    write_atomic(files.crt(stem), pair.cert_pem(), mode=CERT_MODE)


def _ensure_all(
    files: TlsFiles, sans: SubjectAltNames, *, rotate: frozenset[str], now: datetime.datetime | None
) -> None:
    """CAs, the service key, then every leaf; the leaves named in ``rotate`` get new keys. Under the lock."""
    cas = {stem: _ensure_ca(files, stem, cn, now=now) for stem, cn in CAS.items()}
    _ensure_service_key(files)
    for spec in LEAVES:
        _ensure_leaf(files, spec, cas[spec.ca], sans, now=now, force=spec.stem in rotate)


def _ensure_ca(files: TlsFiles, stem: str, common_name: str, *, now: datetime.datetime | None) -> KeyPair:
    pair = _load_pair(files, stem)
    if pair is not None:
        if pair.cert.not_valid_after_utc - (now or _now()) < RENEW_BEFORE:
            logger.warning(
                "CA %s expires %s; CAs are not renewed automatically (see certificate rotate-ca)",
                stem,
                pair.cert.not_valid_after_utc.date(),
            )
        return pair
    if files.crt(stem).exists():
        logger.warning("CA %s is unreadable or does not match its key; generating a new one", stem)
    pair = generate_ca(common_name, now=now)
    _write_pair(files, stem, pair, key_changed=True)
    logger.info("generated CA %s", stem)
    return pair


def _ensure_service_key(files: TlsFiles) -> None:
    try:
        load_private_key(files.service_key)
        return
    except (OSError, ValueError, PkiError):
        pass
    key = generate_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    write_atomic(files.service_key, pem, mode=KEY_MODE)
    logger.info("generated the service account signing key")


def _renewal_reason(
    pair: KeyPair | None, spec: LeafSpec, ca: KeyPair, sans: SubjectAltNames, *, now: datetime.datetime | None
) -> str:
    """Why the stored leaf must be re-issued, or "" when it is fine."""
    if pair is None:
        return "missing"
    try:
        pair.cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        return "not signed by the current CA"
    if needs_renewal(pair.cert, now=now):
        return "expiring"
    if _subject_of(pair.cert) != (spec.common_name, tuple(sorted(spec.organizations))):
        return "subject changed"
    if spec.serving and not _cert_sans(pair.cert).covers(sans):
        return "SANs changed"
    return ""


def _ensure_leaf(
    files: TlsFiles,
    spec: LeafSpec,
    ca: KeyPair,
    sans: SubjectAltNames,
    *,
    now: datetime.datetime | None,
    force: bool,
) -> None:
    pair = _load_pair(files, spec.stem)
    reason = "rotate" if force else _renewal_reason(pair, spec, ca, sans, now=now)
    if not reason:
        return
    key = None if force or pair is None else pair.key  # a renewal keeps the key, a rotation does not
    if spec.serving:
        new = issue_serving_cert(
            ca,
            spec.common_name,
            dns_names=sans.dns_names,
            ip_addresses=sans.ip_addresses,
            organizations=spec.organizations,
            client_auth=spec.client_auth,
            key=key,
            now=now,
        )
    else:
        new = issue_client_cert(ca, spec.common_name, spec.organizations, key=key, now=now)
    _write_pair(files, spec.stem, new, key_changed=key is None)
    log = logger.debug if reason == "missing" else logger.info
    log("issued certificate %s (%s)", spec.stem, reason)


def _backup(files: TlsFiles, *, now: datetime.datetime | None) -> None:
    if not files.directory.is_dir():
        return
    stamp = int((now or _now()).timestamp())
    target = files.directory.with_name(f"{files.directory.name}-{stamp}")
    shutil.copytree(
        files.directory, target, ignore=shutil.ignore_patterns(LOCK_FILE, ".*.tmp"), dirs_exist_ok=True
    )
    os.chmod(target, DIR_MODE)
    logger.info("backed up %s to %s", files.directory, target)


@contextlib.contextmanager
def _locked(files: TlsFiles) -> Iterator[None]:
    """Hold the directory's lock file: one process at a time creates or renews (blocking)."""
    files.directory.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    fd = os.open(files.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, KEY_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
