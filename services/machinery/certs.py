"""Certificate primitives shared by the supervisor's PKI and the API server's node certificates.

Keys are EC P-256 (microseconds to generate, accepted by Go, OpenSSL and every Kubernetes client).
A leaf carries its CA after it (``KeyPair.cert_pem``), as K3s writes ``.crt`` files, and is
backdated an hour so that a node whose clock lags a little accepts it. The supervisor's
``pki`` module keeps the files under ``server/tls``; the API server uses ``issue_client_cert``
and ``load_pair`` to hand joining agents their ``system:node:<name>`` certificates.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 365
BACKDATE = datetime.timedelta(hours=1)  # notBefore in the past, for nodes whose clocks lag a little

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


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
class SubjectAltNames:
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = ()

    def covers(self, other: SubjectAltNames) -> bool:
        return set(other.dns_names) <= set(self.dns_names) and set(other.ip_addresses) <= set(
            self.ip_addresses
        )


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


def load_pair(cert_file: Path, key_file: Path) -> KeyPair:
    """A certificate file (leaf first, then its chain) and its key; ValueError when they do not match."""
    certs = x509.load_pem_x509_certificates(Path(cert_file).read_bytes())
    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"{key_file}: only EC and RSA keys are supported")
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, public) != certs[
        0
    ].public_key().public_bytes(serialization.Encoding.DER, public):
        raise ValueError(f"{key_file} is not the key of {cert_file}")
    return KeyPair(certs[0], key, tuple(certs[1:]))


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
