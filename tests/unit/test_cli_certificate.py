"""``k3s-supervisor certificate rotate``: new leaf keys after a backup, CAs kept, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor import cli, pki


def test_rotate_reissues_the_leaves_and_keeps_the_cas(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pki.ensure(tmp_path)
    files = pki.TlsFiles(pki.tls_dir(tmp_path))
    ca_before = files.crt(pki.SERVER_CA).read_bytes()
    serving_before = files.key(pki.SERVING_APISERVER).read_bytes()
    admin_before = files.key(pki.CLIENT_ADMIN).read_bytes()

    assert cli.run(["certificate", "rotate", "--config", "", "-d", str(tmp_path), "-s", "api-server"]) == 0
    assert "rotated 2 certificates" in capsys.readouterr().out
    assert files.crt(pki.SERVER_CA).read_bytes() == ca_before
    assert files.key(pki.SERVING_APISERVER).read_bytes() != serving_before
    assert files.key(pki.CLIENT_ADMIN).read_bytes() == admin_before  # not named: kept
    assert [p.name for p in (tmp_path / "server").iterdir() if p.name.startswith("tls-")]  # the backup

    assert cli.run(["certificate", "rotate", "--config", "", "-d", str(tmp_path)]) == 0
    assert files.key(pki.CLIENT_ADMIN).read_bytes() != admin_before


def test_rotate_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["certificate", "rotate", "--config", "", "-d", str(tmp_path / "none")]) == 2
    assert "no certificates under" in capsys.readouterr().err
    pki.ensure(tmp_path)
    assert cli.run(["certificate", "rotate", "--config", "", "-d", str(tmp_path), "-s", "bogus"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown service(s) bogus" in err
