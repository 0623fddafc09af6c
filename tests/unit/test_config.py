"""Settings: flags over K3S_* variables over config files, K3s key names, defaults, one-line errors."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from supervisor import cli, config


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def parse_flags(*argv: str) -> dict[str, object]:
    """The flags the user gave, as the CLI hands them to config.load."""
    return config.flags_given(vars(cli.build_parser().parse_args(list(argv))))


def load(*argv: str, environ: dict[str, str] | None = None, is_root: bool = True) -> config.Settings:
    return config.load(parse_flags(*argv), environ=environ or {"K3S_CONFIG_FILE": ""}, is_root=is_root)


# -- defaults ---------------------------------------------------------------------------------------


def test_defaults_follow_k3s_as_root() -> None:
    settings = load("start")
    assert settings.supervisor.data_dir == Path("/var/lib/rancher/k3s")
    assert settings.kine.data_dir == settings.supervisor.data_dir
    assert settings.supervisor.profile == "server"
    assert settings.kine.datastore_endpoint == ""
    assert settings.kine.compact_interval == 300.0
    assert settings.nats.url == "" and settings.nats.port == 0
    assert settings.nats.binary.name == "nats-server"
    assert settings.cluster.node_name


def test_default_data_dir_when_not_root_is_under_home() -> None:
    settings = load("start", is_root=False)
    assert settings.supervisor.data_dir == Path.home() / ".rancher" / "k3s"


def test_relative_data_dir_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load("run", "kine", "-d", "state").supervisor.data_dir == tmp_path / "state"


def test_flags_of_every_command_parse() -> None:
    settings = load(
        "run", "kine", "--data-dir", "/srv/k3s", "--datastore-endpoint", "sqlite:///tmp/x.db",
        "--listen-address", "127.0.0.1:2379", "--metrics-address", "127.0.0.1:8080", "--compact-interval", "1m30s",
        "--nats-url", "nats://127.0.0.1:4222", "--debug",
    )  # fmt: skip
    assert settings.kine.data_dir == Path("/srv/k3s")
    assert settings.kine.datastore_endpoint == "sqlite:///tmp/x.db"
    assert settings.kine.listen_address == "127.0.0.1:2379"
    assert settings.kine.metrics_address == "127.0.0.1:8080"
    assert settings.kine.compact_interval == 90.0
    assert settings.kine.nats_url == settings.nats.url == "nats://127.0.0.1:4222"
    assert settings.supervisor.debug is True


def test_flags_not_given_are_absent() -> None:
    assert parse_flags("start", "-d", "/x") == {"data-dir": "/x"}
    assert parse_flags("run", "nats") == {}


# -- precedence ---------------------------------------------------------------------------------------


def test_flag_beats_environment_beats_file(tmp_path: Path) -> None:
    conf = write(
        tmp_path / "config.yaml",
        "datastore-endpoint: sqlite:///from-file.db\nnode-name: file-node\ncompact-interval: 10m\n",
    )
    environ = {
        "K3S_CONFIG_FILE": str(conf),
        "K3S_DATASTORE_ENDPOINT": "sqlite:///from-env.db",
        "K3S_NODE_NAME": "env-node",
    }
    settings = load("start", "--node-name", "flag-node", environ=environ)
    assert settings.cluster.node_name == "flag-node"  # flag over env and file
    assert settings.kine.datastore_endpoint == "sqlite:///from-env.db"  # env over file
    assert settings.kine.compact_interval == 600.0  # file over default
    assert settings.supervisor.config_file == conf


def test_k3s_environment_variables(tmp_path: Path) -> None:
    environ = {
        "K3S_CONFIG_FILE": "",
        "K3S_DATA_DIR": str(tmp_path),
        "K3S_TOKEN": "K10abc::server:secret",
        "K3S_URL": "https://10.0.0.1:6443",
        "K3S_NODE_NAME": "edge-1",
    }
    settings = load("start", environ=environ)
    assert settings.supervisor.data_dir == tmp_path
    assert settings.cluster.token is not None
    assert settings.cluster.token.get_secret_value() == "K10abc::server:secret"
    assert "secret" not in repr(settings.cluster)
    assert settings.cluster.server == "https://10.0.0.1:6443"
    assert settings.cluster.node_name == "edge-1"


def test_an_empty_variable_counts_as_unset() -> None:
    settings = load("start", environ={"K3S_CONFIG_FILE": "", "K3S_DATASTORE_ENDPOINT": ""})
    assert settings.kine.datastore_endpoint == ""


def test_config_flag_beats_config_variable(tmp_path: Path) -> None:
    by_flag = write(tmp_path / "flag.yaml", "node-name: by-flag\n")
    by_env = write(tmp_path / "env.yaml", "node-name: by-env\n")
    settings = load("start", "-c", str(by_flag), environ={"K3S_CONFIG_FILE": str(by_env)})
    assert settings.cluster.node_name == "by-flag"


def test_empty_config_reads_no_file(tmp_path: Path) -> None:
    settings = load("start", "--config", "", environ={"K3S_CONFIG_FILE": str(tmp_path / "missing.yaml")})
    assert settings.supervisor.config_file is None


def test_drop_in_files_merge_in_name_order(tmp_path: Path) -> None:
    conf = write(tmp_path / "config.yaml", "node-name: base\ncompact-interval: 60\n")
    write(tmp_path / "config.yaml.d" / "20-late.yaml", "node-name: late\n")
    write(tmp_path / "config.yaml.d" / "10-early.yaml", "node-name: early\ncompact-interval: 120\n")
    write(tmp_path / "config.yaml.d" / "30-ignored.yml.txt", "node-name: nope\n")
    settings = load("start", "-c", str(conf))
    assert settings.cluster.node_name == "late"
    assert settings.kine.compact_interval == 120.0


def test_k3s_options_we_lack_warn_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    conf = write(tmp_path / "config.yaml", "kube-apiserver-arg: [a=b]\nflannel-backend: none\n")
    write(tmp_path / "config.yaml.d" / "10.yaml", "kube-apiserver-arg: [c=d]\n")
    with caplog.at_level(logging.WARNING, logger="supervisor.config"):
        load("start", "-c", str(conf))
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("kube-apiserver-arg" in w for w in warnings) == 1
    assert sum("flannel-backend" in w for w in warnings) == 1


def test_unknown_config_keys_are_errors(tmp_path: Path) -> None:
    conf = write(tmp_path / "config.yaml", "datastore-endpiont: postgres://x\n")
    with pytest.raises(config.ConfigError, match="unknown key 'datastore-endpiont'"):
        load("start", "-c", str(conf))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "expected a mapping"),
        ("node-name: [unclosed\n", "line"),
    ],
)
def test_malformed_config_files(tmp_path: Path, text: str, message: str) -> None:
    conf = write(tmp_path / "config.yaml", text)
    with pytest.raises(config.ConfigError, match=message):
        load("start", "-c", str(conf))


def test_a_named_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="does not exist"):
        load("start", "-c", str(tmp_path / "nope.yaml"))


# -- values -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (300, 300.0),
        ("300", 300.0),
        ("5m", 300.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1h", 3600.0),
        ("0", 0.0),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert config.parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["5x", "m5", "1m 30s", ""])
def test_bad_durations(value: str) -> None:
    with pytest.raises(config.ConfigError, match="invalid duration"):
        config.parse_duration(value)


def test_validation_errors_name_the_option_and_never_echo_values(tmp_path: Path) -> None:
    conf = write(tmp_path / "config.yaml", "nats-port: 99999\ndatastore-endpoint: 12345\n")
    with pytest.raises(config.ConfigError) as info:
        load("start", "-c", str(conf))
    message = str(info.value)
    assert "nats-port" in message and "datastore-endpoint" in message
    assert "99999" not in message and "12345" not in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "endpoint",
    [
        "",
        "sqlite:///var/lib/rancher/k3s/server/db/state.db",
        "postgres://user:pass@db:5432/k3s",
        "mysql://",
        "mysql://user:pass@tcp(db:3306)/k3s",
        "mysql://root@tcp(127.0.0.1)/",
        "mysql://user:p@ss@tcp(db:3306)/k3s?tls=true",
        "memory://",
        "https://etcd-1:2379",
    ],
)
def test_accepted_datastore_endpoints(endpoint: str) -> None:
    config.check_datastore_endpoint(endpoint)


@pytest.mark.parametrize(
    "endpoint",
    [
        "mysql://x@nohost",
        "mysql://user:hunter2@nohost",
        "redis://user:hunter2@cache",
        "nohost:5432",
        "k3s.db",
    ],
)
def test_malformed_datastore_endpoints_without_the_password(endpoint: str) -> None:
    with pytest.raises(config.ConfigError, match="malformed datastore-endpoint") as info:
        load("run", "kine", "--datastore-endpoint", endpoint)
    assert "hunter2" not in str(info.value)


def test_redact_dsn() -> None:
    assert config.redact_dsn("postgres://u:pw@h/db") == "postgres://u:***@h/db"
    assert config.redact_dsn("mysql://u:p@ss@tcp(h:1)/db") == "mysql://u:***@tcp(h:1)/db"
    assert config.redact_dsn("mysql://u@tcp(h:1)/db") == "mysql://u@tcp(h:1)/db"


# -- the data dir -------------------------------------------------------------------------------------


def test_prepare_data_dir_creates_a_private_server_dir(tmp_path: Path) -> None:
    server = config.prepare_data_dir(tmp_path / "k3s")
    assert server == tmp_path / "k3s" / "server"
    assert stat.S_IMODE(server.stat().st_mode) == 0o700
    config.prepare_data_dir(tmp_path / "k3s")  # again: fine


def test_prepare_data_dir_under_a_file_fails_in_one_line(tmp_path: Path) -> None:
    blocker = write(tmp_path / "file", "")
    with pytest.raises(config.ConfigError, match="cannot create data dir .*Not a directory"):
        config.prepare_data_dir(blocker / "k3s")


# -- scheduler, controllers, agent --------------------------------------------------------------------


def test_component_groups_follow_the_data_dir_and_cluster_flags() -> None:
    settings = load("start", "-d", "/srv/k3s", "--cluster-cidr", "10.50.0.0/16", "--node-name", "edge-1")
    assert settings.scheduler.kubeconfig == Path("/srv/k3s/server/cred/scheduler.kubeconfig")
    assert settings.controllers.kubeconfig == Path("/srv/k3s/server/cred/controller.kubeconfig")
    assert settings.controllers.data_dir == Path("/srv/k3s")
    assert settings.controllers.cluster_cidr == "10.50.0.0/16"
    assert settings.agent.node_name == "edge-1" and settings.agent.data_dir == Path("/srv/k3s")


def test_component_args_set_their_fields() -> None:
    settings = load(
        "start", "--kube-controller-manager-arg", "node-monitor-grace-period=20s",
        "--kube-controller-manager-arg=--controllers=*,-nodeipam", "--kube-scheduler-arg", "leader-elect=false",
    )  # fmt: skip
    assert settings.controllers.node_monitor_grace_period == 20.0
    assert settings.controllers.controllers == ["*", "-nodeipam"]
    assert settings.scheduler.leader_elect is False


def test_an_unsupported_component_arg_names_the_supported_ones() -> None:
    with pytest.raises(config.ConfigError, match="'horizontal-pod-autoscaler-sync-period' is not supported"):
        load("start", "--kube-controller-manager-arg", "horizontal-pod-autoscaler-sync-period=5s")


def test_disable_takes_repeated_and_comma_separated_names(tmp_path: Path) -> None:
    assert load("start", "--disable", "traefik,servicelb", "--disable", "local-storage").controllers.disabled_addons == [
        "traefik", "servicelb", "local-storage",
    ]  # fmt: skip
    file = write(tmp_path / "config.yaml", "disable:\n  - traefik\n  - metrics-server\n")
    settings = config.load({}, environ={"K3S_CONFIG_FILE": str(file)}, is_root=True)
    assert settings.controllers.disabled_addons == ["traefik", "metrics-server"]


def test_agent_flags(tmp_path: Path) -> None:
    settings = load(
        "run", "agent", "--server", "https://10.0.0.1:6443", "--token", "K10abc::node:secret",
        "--node-label", "zone=a,tier=web", "--node-taint", "dedicated=gpu:NoSchedule", "--virtual-nodes", "5",
    )  # fmt: skip
    agent = settings.agent
    assert agent.server == "https://10.0.0.1:6443"
    assert agent.token is not None and agent.token.get_secret_value() == "K10abc::node:secret"
    assert agent.node_labels == {"zone": "a", "tier": "web"}
    assert agent.node_taints == ["dedicated=gpu:NoSchedule"]
    assert (agent.virtual_nodes, agent.runtime) == (5, "virtual")
    with pytest.raises(config.ConfigError, match="node-label: expected KEY=VALUE"):
        load("run", "agent", "--node-label", "novalue")
