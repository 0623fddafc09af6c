"""Bootstrap data: sealing with the token, the files a joining server installs, settings checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supervisor import bootstrap_data, cluster_join, config, pki, tokens
from supervisor import nats as nats_server

SETTINGS = {"cluster-cidr": "10.42.0.0/16", "service-cidr": "10.43.0.0/16"}


def first_server(data_dir: Path) -> Path:
    files = pki.ensure(data_dir)
    tokens.ensure(data_dir, ca_pem=files.crt(pki.SERVER_CA).read_bytes(), token="s3cret")
    return tokens.server_dir(data_dir)


def test_sealed_record_opens_with_the_token_only() -> None:
    record = bootstrap_data.seal(b"clear text", secret="s3cret")
    assert b"clear text" not in record
    assert record.startswith(b"k3sbd1:")
    assert bootstrap_data.unseal(record, secret="s3cret") == b"clear text"
    with pytest.raises(bootstrap_data.BootstrapError, match="--token"):
        bootstrap_data.unseal(record, secret="wrong")


def test_sealing_twice_gives_different_records() -> None:
    # A fresh salt and nonce each time: equal clear texts never show as equal records.
    assert bootstrap_data.seal(b"x", secret="t") != bootstrap_data.seal(b"x", secret="t")


def test_tampered_or_foreign_records_are_refused() -> None:
    record = bytearray(bootstrap_data.seal(b"clear", secret="t"))
    record[-3] = ord("A") if record[-3] != ord("A") else ord("B")
    with pytest.raises(bootstrap_data.BootstrapError):
        bootstrap_data.unseal(bytes(record), secret="t")
    with pytest.raises(bootstrap_data.BootstrapError, match="format"):
        bootstrap_data.unseal(b"some other value", secret="t")
    with pytest.raises(bootstrap_data.BootstrapError, match="corrupt"):
        bootstrap_data.Bootstrap.from_json(b"[]")


def test_storage_key_hides_the_token() -> None:
    key = bootstrap_data.storage_key("s3cret")
    assert key.startswith(b"/bootstrap/") and len(key) == len(b"/bootstrap/") + 12
    assert b"s3cret" not in key
    assert key != bootstrap_data.storage_key("other")


def test_a_joining_server_gets_the_first_servers_cas_and_keys(tmp_path: Path) -> None:
    first = first_server(tmp_path / "a")
    record = bootstrap_data.collect(first, settings=SETTINGS)
    assert set(record.files) == set(bootstrap_data.FILES)
    assert record.nats_route_password
    clear = bootstrap_data.unseal(bootstrap_data.seal(record.to_json(), secret="s3cret"), secret="s3cret")
    opened = bootstrap_data.Bootstrap.from_json(clear)
    assert opened == record

    joining = tmp_path / "b"
    installed = bootstrap_data.install(tokens.server_dir(joining), opened)
    assert sorted(installed) == sorted(bootstrap_data.FILES)
    files = pki.ensure(joining)  # finds the CAs: issues only this server's leaves
    for stem in pki.CAS:
        assert files.crt(stem).read_bytes() == (first / "tls" / f"{stem}.crt").read_bytes()
    assert files.service_key.read_bytes() == (first / "tls" / pki.SERVICE_KEY).read_bytes()
    assert (files.key(pki.SERVER_CA).stat().st_mode & 0o777) == pki.KEY_MODE
    assert bootstrap_data.install(tokens.server_dir(joining), opened) == []  # nothing differs now


def test_collect_needs_a_prepared_server(tmp_path: Path) -> None:
    with pytest.raises(bootstrap_data.BootstrapError, match="missing"):
        bootstrap_data.collect(tmp_path, settings=SETTINGS)


def test_mismatched_settings_are_named() -> None:
    local = {**SETTINGS, "cluster-cidr": "10.99.0.0/16"}
    (problem,) = bootstrap_data.mismatches(SETTINGS, local)
    assert problem.startswith("cluster-cidr") and "10.99.0.0/16" in problem
    assert bootstrap_data.mismatches(SETTINGS, dict(SETTINGS)) == []


def test_cluster_settings_and_shared_datastores(tmp_path: Path) -> None:
    settings = config.load({"data-dir": str(tmp_path), "disable": "traefik,metrics-server"}, environ={})
    shared = cluster_join.cluster_settings(settings)
    assert shared["disable"] == "metrics-server,traefik"
    assert shared["service-cidr"] == "10.43.0.0/16"
    assert cluster_join.shared_datastore("postgres://u@h/db")
    assert cluster_join.shared_datastore("mysql://root:@tcp(127.0.0.1:3306)/db")
    assert cluster_join.shared_datastore("https://127.0.0.1:2379")  # a real etcd
    assert not cluster_join.shared_datastore("sqlite:///tmp/x.db")
    assert not cluster_join.shared_datastore("")


def test_token_secret_comes_from_flag_or_data_dir(tmp_path: Path) -> None:
    given = config.load(
        {"data-dir": str(tmp_path), "token": "K10" + "a" * 64 + "::server:s3cret"}, environ={}
    )
    assert cluster_join.token_secret(given) == "s3cret"
    bare = config.load({"data-dir": str(tmp_path)}, environ={})
    assert cluster_join.token_secret(bare) is None
    first_server(tmp_path)
    assert cluster_join.token_secret(bare) == "s3cret"


def test_nats_cluster_block(tmp_path: Path) -> None:
    credentials = nats_server.Credentials(user="k3s-server", password="pw")
    alone = nats_server.render_config(port=4333, credentials=credentials)
    assert "cluster" not in alone
    directory = nats_server.nats_dir(tmp_path)
    directory.mkdir(parents=True)
    (directory / nats_server.CLUSTER_FILE).write_text(
        json.dumps({"id": "x", "listen": "127.0.0.1:6222", "routes": ["127.0.0.1:6223"], "password": "r/p"})
    )
    cluster = nats_server.read_cluster(tmp_path)
    assert cluster is not None
    text = nats_server.render_config(port=4333, credentials=credentials, cluster=cluster)
    assert 'listen: "127.0.0.1:6222"' in text
    assert "nats-route://k3s-route:r%2Fp@127.0.0.1:6223" in text
    (directory / nats_server.CLUSTER_FILE).write_text("{")
    with pytest.raises(nats_server.NatsError, match="corrupt"):
        nats_server.read_cluster(tmp_path)
