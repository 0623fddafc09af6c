"""The cluster PKI: K3s's file names and subjects, validity, renewal, rotation, concurrent starts."""

from __future__ import annotations

import datetime
import ipaddress
import multiprocessing
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from supervisor import pki

NOW = datetime.datetime.now(datetime.UTC)


def cert_of(files: pki.TlsFiles, stem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificates(files.crt(stem).read_bytes())[0]


def subject(cert: x509.Certificate) -> tuple[str, list[str]]:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return str(cn), [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


def sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)), {
        str(ip) for ip in ext.get_values_for_type(x509.IPAddress)
    }


def snapshot(files: pki.TlsFiles) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(files.directory.iterdir()) if not p.name.startswith(".")}


# -- first start ------------------------------------------------------------------------------------


def test_first_start_writes_k3s_files(tmp_path: Path) -> None:
    files = pki.ensure(tmp_path)
    assert files.directory == tmp_path / "server" / "tls"
    names = {p.name for p in files.directory.iterdir()}
    for stem in ("server-ca", "client-ca", "request-header-ca", "serving-kube-apiserver", "client-admin",
                 "client-kube-apiserver", "client-scheduler", "client-controller", "client-k3s-controller",
                 "client-auth-proxy", "client-kube-proxy", "client-supervisor"):  # fmt: skip
        assert f"{stem}.crt" in names and f"{stem}.key" in names, stem
    assert "service.key" in names


def test_keys_are_private_and_certs_readable(tmp_path: Path) -> None:
    files = pki.ensure(tmp_path)
    for path in files.directory.iterdir():
        if path.name.startswith("."):
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o600 if path.suffix == ".key" else 0o644), path.name
    assert stat.S_IMODE(files.directory.stat().st_mode) == 0o700


def test_cas_last_ten_years_and_leaves_one(tmp_path: Path) -> None:
    files = pki.ensure(tmp_path)
    ca = cert_of(files, "server-ca")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert subject(ca)[0].startswith("k3s-server-ca@")
    assert (ca.not_valid_after_utc - NOW).days in (3649, 3650)
    admin = cert_of(files, "client-admin")
    assert (admin.not_valid_after_utc - NOW).days in (364, 365)
    assert isinstance(admin.public_key(), ec.EllipticCurvePublicKey)
    assert admin.public_key().curve.name == "secp256r1"


@pytest.mark.parametrize(
    ("stem", "cn", "orgs", "ca"),
    [
        ("client-admin", "system:admin", ["system:masters"], "client-ca"),
        ("client-kube-apiserver", "system:apiserver", ["system:masters"], "client-ca"),
        ("client-scheduler", "system:kube-scheduler", [], "client-ca"),
        ("client-controller", "system:kube-controller-manager", [], "client-ca"),
        ("client-auth-proxy", "system:auth-proxy", [], "request-header-ca"),
        ("serving-kube-apiserver", "kube-apiserver", [], "server-ca"),
    ],
)
def test_subjects_and_signers(tmp_path: Path, stem: str, cn: str, orgs: list[str], ca: str) -> None:
    files = pki.ensure(tmp_path)
    cert = cert_of(files, stem)
    assert subject(cert) == (cn, orgs)
    cert.verify_directly_issued_by(cert_of(files, ca))
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    wanted = (
        ExtendedKeyUsageOID.SERVER_AUTH if stem.startswith("serving") else ExtendedKeyUsageOID.CLIENT_AUTH
    )
    assert list(usage) == [wanted]


def test_leaf_files_carry_the_ca_after_the_leaf(tmp_path: Path) -> None:
    files = pki.ensure(tmp_path)
    chain = x509.load_pem_x509_certificates(files.crt("client-admin").read_bytes())
    assert [c.subject for c in chain] == [
        cert_of(files, "client-admin").subject,
        cert_of(files, "client-ca").subject,
    ]


def test_openssl_verifies_the_chain(tmp_path: Path) -> None:
    files = pki.ensure(tmp_path)
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-x509_strict",
            "-CAfile",
            files.crt("server-ca"),
            files.crt("serving-kube-apiserver"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_serving_sans(tmp_path: Path) -> None:
    files = pki.ensure(
        tmp_path, node_ips=["192.168.1.5"], tls_sans=["k3s.example.com", "10.0.0.9"], node_name="n1"
    )
    dns, ips = sans(cert_of(files, "serving-kube-apiserver"))
    assert dns == {"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                   "kubernetes.default.svc.cluster.local", "k3s.example.com", "n1"}  # fmt: skip
    assert ips == {"127.0.0.1", "::1", "10.43.0.1", "192.168.1.5", "10.0.0.9"}


def test_service_ip_and_domain_follow_settings() -> None:
    wanted = pki.apiserver_sans(service_ip="10.96.0.1", cluster_domain="corp.local")
    assert ipaddress.ip_address("10.96.0.1") in wanted.ip_addresses
    assert "kubernetes.default.svc.corp.local" in wanted.dns_names


# -- restarts -----------------------------------------------------------------------------------------


def test_second_start_changes_nothing(tmp_path: Path) -> None:
    files = pki.ensure(tmp_path, node_ips=["192.168.1.5"])
    before = snapshot(files)
    pki.ensure(tmp_path, node_ips=["192.168.1.5"])
    assert snapshot(files) == before


def test_leaf_near_expiry_is_renewed_with_the_same_key(tmp_path: Path) -> None:
    files = pki.ensure(tmp_path, now=NOW - datetime.timedelta(days=300))
    old = cert_of(files, "client-admin")
    ca_before = files.crt("server-ca").read_bytes()
    key_before = files.key("client-admin").read_bytes()
    pki.ensure(tmp_path)
    new = cert_of(files, "client-admin")
    assert new.serial_number != old.serial_number
    assert new.not_valid_after_utc > NOW + datetime.timedelta(days=360)
    assert files.key("client-admin").read_bytes() == key_before
    assert files.crt("server-ca").read_bytes() == ca_before  # CAs are never renewed automatically


def test_leaf_far_from_expiry_is_kept(tmp_path: Path) -> None:
    files = pki.ensure(tmp_path, now=NOW - datetime.timedelta(days=200))
    before = cert_of(files, "client-admin").serial_number
    pki.ensure(tmp_path)
    assert cert_of(files, "client-admin").serial_number == before


def test_new_tls_san_reissues_the_serving_cert(tmp_path: Path) -> None:
    files = pki.ensure(tmp_path)
    admin = cert_of(files, "client-admin").serial_number
    pki.ensure(tmp_path, tls_sans=["new.example.com"])
    assert "new.example.com" in sans(cert_of(files, "serving-kube-apiserver"))[0]
    assert cert_of(files, "client-admin").serial_number == admin


def test_missing_or_mismatched_files_are_regenerated(tmp_path: Path) -> None:
    files = pki.ensure(tmp_path)
    files.crt("client-scheduler").unlink()
    other = pki.generate_key()
    files.key("client-controller").write_bytes(pki.KeyPair(cert_of(files, "server-ca"), other).key_pem())
    pki.ensure(tmp_path)
    assert subject(cert_of(files, "client-scheduler"))[0] == "system:kube-scheduler"
    assert pki.load(files, "client-controller").cert.subject == cert_of(files, "client-controller").subject


def test_leaves_of_a_replaced_ca_are_reissued(tmp_path: Path) -> None:
    files = pki.ensure(tmp_path)
    files.crt("client-ca").unlink()
    files.key("client-ca").unlink()
    pki.ensure(tmp_path)
    cert_of(files, "client-admin").verify_directly_issued_by(cert_of(files, "client-ca"))


# -- rotate -----------------------------------------------------------------------------------------


def test_rotate_reissues_every_leaf_with_new_keys_and_backs_up(tmp_path: Path) -> None:
    files = pki.ensure(tmp_path)
    before = snapshot(files)
    rotated = pki.rotate(tmp_path)
    assert set(rotated) == {spec.stem for spec in pki.LEAVES}
    after = snapshot(files)
    for stem in rotated:
        assert after[f"{stem}.crt"] != before[f"{stem}.crt"]
        assert after[f"{stem}.key"] != before[f"{stem}.key"]
    for kept in ("server-ca.crt", "server-ca.key", "client-ca.crt", "service.key"):
        assert after[kept] == before[kept]
    backups = [p for p in (tmp_path / "server").iterdir() if p.name.startswith("tls-")]
    assert len(backups) == 1 and (backups[0] / "client-admin.crt").read_bytes() == before["client-admin.crt"]


def test_rotate_one_service(tmp_path: Path) -> None:
    files = pki.ensure(tmp_path)
    before = snapshot(files)
    assert pki.rotate(tmp_path, services=["scheduler"]) == ["client-scheduler"]
    after = snapshot(files)
    assert after["client-scheduler.crt"] != before["client-scheduler.crt"]
    assert after["client-admin.crt"] == before["client-admin.crt"]


def test_rotate_unknown_service_is_refused(tmp_path: Path) -> None:
    with pytest.raises(pki.PkiError, match="unknown service"):
        pki.rotate(tmp_path, services=["etcd-nope"])


# -- reusable issuers -----------------------------------------------------------------------------


def test_issue_client_and_serving_certs_for_a_node() -> None:
    ca = pki.generate_ca("test-ca")
    client = pki.issue_client_cert(ca, "system:node:n1", ["system:nodes"], 30)
    assert subject(client.cert) == ("system:node:n1", ["system:nodes"])
    client.cert.verify_directly_issued_by(ca.cert)
    serving = pki.issue_serving_cert(ca, "n1", dns_names=["n1"], ip_addresses=["10.0.0.2"])
    assert sans(serving.cert) == ({"n1"}, {"10.0.0.2"})
    assert b"PRIVATE KEY" in serving.key_pem() and serving.cert_pem().count(b"BEGIN CERTIFICATE") == 2


def _start(data_dir: str) -> None:
    pki.ensure(Path(data_dir))


def test_concurrent_starts_agree(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_start, args=(str(tmp_path),)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    files = pki.TlsFiles(pki.tls_dir(tmp_path))
    for spec in pki.LEAVES:
        pair = pki.load(files, spec.stem)  # key matches cert
        pair.cert.verify_directly_issued_by(cert_of(files, spec.ca))
    assert not [p for p in files.directory.iterdir() if p.name.endswith(".tmp")]
