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
import ipaddress
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

logger = logging.getLogger(__name__)

CA_DAYS = 3650
LEAF_DAYS = 365
RENEW_BEFORE = datetime.timedelta(days=90)  # K3s renews leaves this long before they expire
BACKDATE = datetime.timedelta(hours=1)  # notBefore in the past, for nodes whose clocks lag a little
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

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class PkiError(Exception):
    """A PKI request the user has to fix (for example an unknown service to rotate)."""


@dataclasses.dataclass(frozen=True, slots=True)
class KeyPair:
    """A certificate, its private key, and the CA certificates it chains to (none for a CA)."""

    cert: x509.Certificate
    key: PrivateKey = dataclasses.field(repr=False)
    chain: tuple[x509.Certificate, ...] = ()

    def cert_pem(self) -> bytes:
        """The certificate followed by its chain, as K3s writes ``.crt`` files."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.cert, *self.chain))

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class LeafSpec:
    """One leaf certificate K3s keeps in ``server/tls``: file stem, signer, subject, rotate service."""

    stem: str
    ca: str
    common_name: str
    organizations: tuple[str, ...] = ()
    serving: bool = False
    service: str = ""  # the name `k3s certificate rotate --service` knows it by


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


@dataclasses.dataclass(frozen=True, slots=True)
class SubjectAltNames:
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = ()

    def covers(self, other: SubjectAltNames) -> bool:
        return set(other.dns_names) <= set(self.dns_names) and set(other.ip_addresses) <= set(
            self.ip_addresses
        )


def tls_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "server" / "tls"


# -- issuing ------------------------------------------------------------------------------------


def generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def generate_ca(common_name: str, *, days: int = CA_DAYS, now: datetime.datetime | None = None) -> KeyPair:
    """A self-signed CA; K3s names its CAs ``<name>@<unix time>`` so a new one is recognisable."""
    now = now or _now()
    key = generate_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name}@{int(now.timestamp())}")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        _builder(name, name, key.public_key(), now=now, days=days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def issue_client_cert(
    ca: KeyPair,
    common_name: str,
    organizations: Sequence[str] = (),
    days: int = LEAF_DAYS,
    *,
    key: PrivateKey | None = None,
    now: datetime.datetime | None = None,
) -> KeyPair:
    """A client certificate: Kubernetes reads the user from CN and the groups from the O values."""
    key = key or generate_key()
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    builder = _leaf_builder(
        ca, x509.Name(attrs), key, usage=ExtendedKeyUsageOID.CLIENT_AUTH, now=now, days=days
    )
    return KeyPair(builder.sign(ca.key, hashes.SHA256()), key, (ca.cert,))


def issue_serving_cert(
    ca: KeyPair,
    common_name: str,
    *,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str | ipaddress.IPv4Address | ipaddress.IPv6Address] = (),
    organizations: Sequence[str] = (),
    client_auth: bool = False,
    days: int = LEAF_DAYS,
    key: PrivateKey | None = None,
    now: datetime.datetime | None = None,
) -> KeyPair:
    """A TLS server certificate; clients match hosts against the SANs only (never the CN)."""
    key = key or generate_key()
    sans = _sans(dns_names, ip_addresses)
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else [])
    builder = _leaf_builder(ca, x509.Name(attrs), key, usage=usages, now=now, days=days)
    general: list[x509.GeneralName] = [x509.DNSName(d) for d in sans.dns_names]
    general += [x509.IPAddress(ip) for ip in sans.ip_addresses]
    if general:
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    return KeyPair(builder.sign(ca.key, hashes.SHA256()), key, (ca.cert,))


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


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: PublicKey, *, now: datetime.datetime, days: int
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _leaf_builder(
    ca: KeyPair,
    subject: x509.Name,
    key: PrivateKey,
    *,
    usage: x509.ObjectIdentifier | list[x509.ObjectIdentifier],
    now: datetime.datetime | None,
    days: int,
) -> x509.CertificateBuilder:
    usages = usage if isinstance(usage, list) else [usage]
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        _builder(subject, ca.cert.subject, key.public_key(), now=now or _now(), days=days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(cert_sign=False, key_encipherment=isinstance(key, rsa.RSAPrivateKey)), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
    )


def _key_usage(*, cert_sign: bool, key_encipherment: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,  # only meaningful for RSA key transport
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _sans(
    dns_names: Iterable[str],
    ip_addresses: Iterable[str | ipaddress.IPv4Address | ipaddress.IPv6Address],
    *,
    extra: Iterable[str] = (),
) -> SubjectAltNames:
    """Deduplicated, sorted SANs; ``extra`` entries are IPs when they parse as one, else DNS names."""
    dns = {d.strip().lower() for d in dns_names if d.strip()}
    ips = {ipaddress.ip_address(ip) for ip in ip_addresses if str(ip).strip()}
    for item in extra:
        item = item.strip()
        if not item:
            continue
        try:
            ips.add(ipaddress.ip_address(item))
        except ValueError:
            dns.add(item.lower())
    return SubjectAltNames(tuple(sorted(dns)), tuple(sorted(ips, key=lambda ip: (ip.version, int(ip)))))


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
