"""The ``k3s-supervisor`` command line: parse, load the settings once, run one command.

    k3s-supervisor start [--profile server|agent|edge] [flags]   the whole server
    k3s-supervisor run kine [flags]                              kine alone, in the foreground
    k3s-supervisor run nats [flags]                              the bundled NATS alone
    k3s-supervisor run apiserver|scheduler|controllers [flags]   one control-plane component alone

Each command serves one component (kine, a NatsServer, the ProcessManager, the edge fold) through
``serve``, which owns the process's signal handling: the first SIGTERM/SIGINT stops gracefully,
a second one forces, and a last-resort timer ends the process if even that hangs.

Errors a user can fix (a flag, a path, a DSN, a busy port, an unreachable database) are translated
here, at the boundary, into one line ``k3s-supervisor: error: ...`` and exit code 2, which also tells
a supervising parent not to retry; a component dying after it was up exits 1. Secrets in URLs are
redacted from every such line.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, NoReturn, Protocol

import pydantic

import services.bus
from services.bus import types as bus_types
from services.kine import settings as kine_settings
from services.kine import types as kine_types
from supervisor import (
    bootstrap_data,
    config,
    pki,
    process,
    profiles,
    s3,
    snapshot_schedule,
    snapshots,
    tokens,
)
from supervisor import nats as nats_server

logger = logging.getLogger(__name__)

PROG = "k3s-supervisor"
EXIT_OK = 0
EXIT_FAILED = 1  # a component died or the stop had to be forced
EXIT_USER_ERROR = process.PERMANENT_EXIT_CODE
GC_THRESHOLDS = (10_000, 20, 100)  # generation 0 allocations, then collections of the younger ones
FORCE_EXIT_AFTER = 5.0  # seconds after a second signal before the process ends regardless
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class UsageError(Exception):
    """A malformed command line (argparse's complaint, as one line)."""


class StartError(Exception):
    """A component could not start for a reason the user can fix."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    UsageError,
    StartError,
    config.ConfigError,
    pydantic.ValidationError,
    OSError,
    kine_types.StoreError,
    bus_types.BusError,
    process.ProcessError,
    nats_server.NatsError,
    pki.PkiError,
    tokens.TokenError,
    bootstrap_data.BootstrapError,
    s3.S3Error,
)


class Component(Protocol):
    async def start(self) -> None: ...

    async def wait(self) -> None: ...

    async def stop(self) -> None: ...


# -- entry point ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> NoReturn:
    sys.exit(run(argv))


def run(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    # Watch caches and informers hold hundreds of thousands of long-lived objects; with the default
    # thresholds the collector rescans them often (about a tenth of the API server's CPU on creates).
    gc.set_threshold(GC_THRESHOLDS[0], GC_THRESHOLDS[1], GC_THRESHOLDS[2])
    # gRPC's fork handlers complain on every child we start after a gRPC readiness probe; we never
    # use gRPC in a forked child, so they have nothing to protect. Must be set before grpc loads.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    try:
        args = build_parser().parse_args(argv)
        settings = config.load(config.flags_given(vars(args)), environ=os.environ)
        logging.getLogger().setLevel(logging.DEBUG if settings.supervisor.debug else logging.INFO)
        if args.command == "certificate":
            return rotate_certificates(settings, services=args.service or ())
        if args.command == "etcd-snapshot":
            names = getattr(args, "snapshots", None) or ()
            return run_loop(snapshots.run_command(settings, args.snapshot_action, names))
        command = "start" if args.command == "start" else f"run {args.component}"
        if command != "start":
            _die_with_supervisor()
        return run_loop(COMMANDS[command](settings))
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BaseException as exc:
        error = user_error(exc)
        if error is None:
            raise
        print(f"{PROG}: error: {describe(error)}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR


def run_loop(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro)


def _die_with_supervisor() -> None:
    """Under the supervisor, ask for SIGTERM when it dies (see process.SUPERVISOR_PID_ENV)."""
    supervisor_pid = os.environ.get(process.SUPERVISOR_PID_ENV, "")
    if supervisor_pid.isdigit():
        process.set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != int(supervisor_pid):  # it died before we asked
            raise StartError("the supervisor that started this process is gone")


def user_error(exc: BaseException) -> BaseException | None:
    """The error to show the user, found inside exception groups too; None for a real bug."""
    if isinstance(exc, USER_ERRORS):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = user_error(inner)
            if found is not None:
                return found
    return None


def describe(exc: BaseException) -> str:
    """One line for the user, with any credential in a URL hidden."""
    if isinstance(exc, pydantic.ValidationError):
        text = config.describe_validation_error(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return services.bus.redact_url(" ".join(text.split()))


# -- the parser ---------------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="A K3s-style lightweight Kubernetes: supervisor and components.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    start = commands.add_parser("start", help="run the server (nats, kine, ...) until SIGTERM/SIGINT")
    add_options(start, "start")
    certificate = commands.add_parser("certificate", help="manage the cluster's certificates")
    actions = certificate.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=Parser)
    rotate = actions.add_parser("rotate", help="re-issue the leaf certificates (the server must be stopped)")
    rotate.add_argument(
        "--service", "-s", action="append", metavar="NAME",
        help=f"only this service's certificates (repeatable; one of {', '.join(sorted(pki.SERVICES))})",
    )  # fmt: skip
    add_options(rotate, "certificate rotate")
    etcd_snapshot = commands.add_parser("etcd-snapshot", help="save, list, delete or prune datastore snapshots")
    snapshot_actions = etcd_snapshot.add_subparsers(
        dest="action", required=True, metavar="ACTION", parser_class=Parser
    )
    for action, aliases, text in snapshots.ACTIONS:
        action_parser = snapshot_actions.add_parser(action, aliases=list(aliases), help=text)
        add_options(action_parser, f"etcd-snapshot {action}")
        snapshots.add_arguments(action_parser, action)
    run_parser = commands.add_parser("run", help="run one component in the foreground, for debugging")
    components = run_parser.add_subparsers(
        dest="component", required=True, metavar="COMPONENT", parser_class=Parser
    )
    add_options(components.add_parser("kine", help="kine: etcd v3 API on a SQL datastore"), "run kine")
    add_options(components.add_parser("nats", help="the bundled nats-server, on loopback"), "run nats")
    add_options(components.add_parser("apiserver", help="the Kubernetes API server (HTTPS)"), "run apiserver")
    add_options(
        components.add_parser("scheduler", help="the scheduler (binds pods to nodes)"), "run scheduler"
    )
    add_options(
        components.add_parser("controllers", help="the controller manager (deployments, jobs, ...)"),
        "run controllers",
    )
    add_options(
        components.add_parser("agent", help="the node agent (joins --server, runs pods)"), "run agent"
    )
    return parser


def add_options(parser: argparse.ArgumentParser, command: str) -> None:
    for option in config.OPTIONS:
        if command not in option.commands:
            continue
        names = [f"--{option.key}", *([option.short] if option.short else [])]
        # As K3s's help does: each flag names the variable that can set it too.
        common = {
            "dest": option.key,
            "default": argparse.SUPPRESS,
            "help": option.help + (f" [${option.env}]" if option.env else ""),
        }
        if option.switch:
            parser.add_argument(*names, action="store_true", **common)
        elif option.repeatable:
            parser.add_argument(*names, action="append", metavar=option.metavar, **common)
        else:
            parser.add_argument(*names, metavar=option.metavar, choices=option.choices, **common)


# -- commands ------------------------------------------------------------------------------------------


async def run_kine(settings: config.Settings) -> int:
    config.prepare_data_dir(settings.supervisor.data_dir)
    # Imported here: gRPC and the SQL drivers load only for the commands that need them.
    from services.kine import component
    from services.kine.server import server as kine_server

    kine = component.Kine(settings.kine)
    try:
        return await serve(kine, name="kine")
    except kine_server.ServerError as exc:  # e.g. the listen address is taken; not a StoreError
        raise StartError(str(exc)) from None


async def run_nats(settings: config.Settings) -> int:
    config.prepare_data_dir(settings.supervisor.data_dir)
    server = nats_server.NatsServer(settings.nats, data_dir=settings.supervisor.data_dir)
    # The URL on stdout, for scripts; never the password (it is in <data-dir>/server/nats/).
    return await serve(server, name="nats", on_ready=lambda: print(server.url, flush=True))


async def run_apiserver(settings: config.Settings) -> int:
    config.prepare_data_dir(settings.supervisor.data_dir)
    profiles.prepare(settings)
    from services.apiserver import server as apiserver

    api_settings = settings.apiserver  # a real etcd (http(s) --datastore-endpoint) is already there
    if not api_settings.store_address:
        api_settings = api_settings.model_copy(update={"store_address": kine_target(settings.kine)})
    component = apiserver.ApiServer(api_settings)

    def ready() -> None:
        if settings.supervisor.write_kubeconfig is not None:
            profiles.write_admin_kubeconfig(settings, port=component.port)

    return await serve(component, name="apiserver", on_ready=ready)


async def run_scheduler(settings: config.Settings) -> int:
    from services.scheduler import component as scheduler

    _require_kubeconfig(settings.scheduler.kubeconfig, "scheduler")
    return await serve(scheduler.Scheduler(settings.scheduler), name="scheduler")


async def run_controllers(settings: config.Settings) -> int:
    from services.controllers import component as controllers

    _require_kubeconfig(settings.controllers.kubeconfig, "controllers")
    return await serve(controllers.ControllerManager(settings.controllers), name="controllers")


def _require_kubeconfig(path: Path | None, component: str) -> None:
    if path is None or not path.exists():
        raise StartError(f"{component}: kubeconfig {path} does not exist (start the API server first)")


async def run_agent(settings: config.Settings) -> int:
    from services.agent import component as agent
    from services.agent import join

    bus = await services.bus.connect(settings.nats.url) if settings.nats.url else None
    try:
        return await serve(agent.Agent(settings.agent, bus=bus), name="agent")
    except join.JoinError as exc:
        raise StartError(str(exc)) from None
    finally:
        if bus is not None:
            await bus.close()


async def start(settings: config.Settings) -> int:
    profile = settings.supervisor.profile
    if profile == "agent":
        if not settings.agent.server:
            raise config.ConfigError("the agent profile needs --server (K3S_URL)")
        return await run_agent(settings)
    config.prepare_data_dir(settings.supervisor.data_dir)
    _check_kubeconfig_mode(settings)
    await snapshots.reset(settings)  # --cluster-reset: restore a snapshot before anything starts
    component: Component
    if profile == "edge":
        profiles.prepare(settings)
        component = snapshot_schedule.attach(profiles.Edge(settings), settings)
        return await serve(component, name=f"{PROG} ({profile} profile)")
    settings = profiles.fixed_port(settings)
    from supervisor import cluster_join  # loads the SQL drivers: only the server profile needs it

    # On a shared PostgreSQL/MySQL datastore or etcd: join the cluster (its CAs, keys, NATS routes) first.
    settings = await cluster_join.prepare(settings)
    children = server_children(settings)
    component = process.ProcessManager(children, backoff=backoff(settings.supervisor))
    component = snapshot_schedule.attach(component, settings)
    component = cluster_join.attach(component, settings, kine_address=kine_target(settings.kine))
    port = settings.apiserver.https_listen_port
    return await serve(
        component,
        name=f"{PROG} ({profile} profile)",
        on_ready=lambda: profiles.write_admin_kubeconfig(settings, port=port),
    )


def rotate_certificates(settings: config.Settings, *, services: Sequence[str]) -> int:
    """``k3s certificate rotate``: new keys and certificates for the leaves, CAs kept, after a backup."""
    data_dir = settings.supervisor.data_dir
    if not pki.TlsFiles(pki.tls_dir(data_dir)).crt(pki.SERVER_CA).exists():
        raise StartError(
            f"no certificates under {pki.tls_dir(data_dir)} (has a server run with this data dir?)"
        )
    api = settings.apiserver
    rotated = pki.rotate(
        data_dir,
        services=services,
        node_ips=[ip for ip in {api.advertise_address, "127.0.0.1"} if ip],
        tls_sans=settings.supervisor.tls_san,
        node_name=settings.cluster.node_name,
    )
    print(f"rotated {len(rotated)} certificates; restart the server to use them", flush=True)
    return EXIT_OK


def _check_kubeconfig_mode(settings: config.Settings) -> None:
    from supervisor import kubeconfig

    try:
        kubeconfig.parse_mode(settings.supervisor.write_kubeconfig_mode)
    except ValueError as exc:
        raise config.ConfigError(str(exc)) from None


COMMANDS: dict[str, Callable[[config.Settings], Coroutine[Any, Any, int]]] = {
    "start": start,
    "run kine": run_kine,
    "run nats": run_nats,
    "run apiserver": run_apiserver,
    "run scheduler": run_scheduler,
    "run controllers": run_controllers,
    "run agent": run_agent,
}


# -- serving one component until a signal ---------------------------------------------------------------


class Signals:
    """SIGTERM/SIGINT for the whole process: the first asks for a graceful stop, the second forces it."""

    HANDLED = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.forcing = asyncio.Event()
        self._received = 0

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in self.HANDLED:
            loop.add_signal_handler(signum, self._on_signal, signum, loop)

    def uninstall(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in self.HANDLED:
            loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int, loop: asyncio.AbstractEventLoop) -> None:
        self._received += 1
        name = signal.Signals(signum).name
        if self._received == 1:
            logger.info("received %s: stopping (send it again to force)", name)
            self.stopping.set()
        elif not self.forcing.is_set():
            logger.warning("received %s again: forcing the stop", name)
            self.forcing.set()
            # Last resort: if even the forced path hangs, end the process without cleanup.
            loop.call_later(FORCE_EXIT_AFTER, os._exit, EXIT_FAILED)


async def serve(component: Component, *, name: str, on_ready: Callable[[], None] | None = None) -> int:
    """Start ``component``, run it until a signal or its own end, stop it; return the exit code."""
    loop = asyncio.get_running_loop()
    signals = Signals()
    signals.install(loop)
    try:
        if await first(component.start(), signals.stopping.wait(), name=f"{name} start"):
            # What start-up allocated lives as long as the process: keep the collector off it.
            gc.freeze()
            if on_ready is not None:
                on_ready()
            try:
                if await first(component.wait(), signals.stopping.wait(), name=f"{name} wait"):
                    logger.error("%s ended on its own", name)
                    await component.stop()
                    return EXIT_FAILED
            except Exception as exc:
                logger.error("%s failed: %s", name, describe(exc))
                await component.stop()
                return EXIT_FAILED
        return await shutdown(component, signals, name=name)
    finally:
        signals.uninstall(loop)


async def shutdown(component: Component, signals: Signals, *, name: str) -> int:
    if await first(component.stop(), signals.forcing.wait(), name=f"{name} stop"):
        return EXIT_OK
    logger.warning("%s: stop forced", name)
    return EXIT_FAILED


async def first(main: Coroutine[Any, Any, Any], interrupt: Coroutine[Any, Any, Any], *, name: str) -> bool:
    """Run both; True if ``main`` finished first (its error raised), False if ``interrupt`` did,
    in which case ``main`` has been cancelled and awaited."""
    main_task = asyncio.create_task(main, name=name)
    interrupt_task = asyncio.create_task(interrupt, name=f"{name} interrupt")
    try:
        await asyncio.wait({main_task, interrupt_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await process.cancel_and_wait(*(task for task in (interrupt_task, main_task) if not task.done()))
    if main_task.cancelled():
        return False
    main_task.result()
    return True


# -- wiring -------------------------------------------------------------------------------------------------


def backoff(settings: config.SupervisorSettings) -> process.Backoff:
    return process.Backoff(
        initial=settings.restart_backoff_initial,
        maximum=settings.restart_backoff_max,
        reset_after=settings.restart_reset_after,
    )


def server_children(settings: config.Settings) -> list[process.ChildSpec]:
    """nats (unless --nats-url names an external one), then kine: each waits for the one before."""
    specs: list[process.ChildSpec] = []
    nats_url = settings.nats.url
    if not nats_url:
        # Resolved once, so a restarted nats-server comes back where kine expects it.
        port = settings.nats.port or nats_server.pick_free_port()
        nats_url = nats_server.client_url(port, nats_server.ensure_credentials(settings.supervisor.data_dir))
        specs.append(
            _child_spec(
                settings,
                "nats",
                flags=["--nats-port", str(port)],
                probe=functools.partial(nats_server.probe, nats_url),
            )
        )
    # A real etcd (http(s) endpoint) replaces kine: the API server dials it itself.
    etcd = settings.kine.datastore_endpoint if config.is_etcd_endpoint(settings.kine.datastore_endpoint) else ""
    if not etcd:
        specs.append(
            _child_spec(
                settings,
                "kine",
                flags=_kine_flags(settings.kine),
                # Secrets travel in the environment, never on a command line anyone can read in ps.
                secrets={"K3S_DATASTORE_ENDPOINT": settings.kine.datastore_endpoint, "K3S_NATS_URL": nats_url},
                probe=process.grpc_health_probe(kine_target(settings.kine)),
            )
        )
    specs.append(
        _child_spec(
            settings,
            "apiserver",
            flags=profiles.apiserver_flags(settings.apiserver),
            secrets={"K3S_NATS_URL": nats_url, "K3S_DATASTORE_ENDPOINT": etcd},
            probe=profiles.readyz_probe(settings),
        )
    )
    specs += control_plane_children(settings)
    if not settings.supervisor.disable_agent:
        specs.append(
            _child_spec(
                settings,
                "agent",
                flags=profiles.server_agent_flags(settings),
                secrets={"K3S_NATS_URL": nats_url},
                probe=profiles.always_ready,
            )
        )
    return specs


def control_plane_children(settings: config.Settings) -> list[process.ChildSpec]:
    """The scheduler and the controllers, each gated on its own /healthz (they need the API server up)."""
    specs = []
    supervisor = settings.supervisor
    wanted = (
        ("scheduler", not supervisor.disable_scheduler, profiles.scheduler_flags(settings)),
        ("controllers", not supervisor.disable_controller_manager, profiles.controllers_flags(settings)),
    )
    for component, enabled, flags in wanted:
        if not enabled:
            continue
        # One loopback port per child, chosen once, so a restarted child answers where we probe.
        port = nats_server.pick_free_port()
        flags += [f"--{component}-health-address", f"127.0.0.1:{port}"]
        specs.append(_child_spec(settings, component, flags=flags, probe=profiles.healthz_probe(port)))
    return specs


def _child_spec(
    settings: config.Settings,
    component: str,
    *,
    flags: list[str],
    probe: process.Probe,
    secrets: dict[str, str] | None = None,
) -> process.ChildSpec:
    supervisor = settings.supervisor
    argv = [sys.executable, "-m", "supervisor", "run", component, "--config", ""]
    argv += ["--data-dir", str(supervisor.data_dir), *(["--debug"] if supervisor.debug else []), *flags]
    # The child gets its settings explicitly; no K3S_* variable of ours may override them.
    env = {key: value for key, value in os.environ.items() if not key.startswith("K3S_")}
    env.update({key: value for key, value in (secrets or {}).items() if value})
    env["PYTHONUNBUFFERED"] = "1"
    return process.ChildSpec(
        name=component,
        argv=argv,
        env=env,
        probe=probe,
        ready_timeout=supervisor.ready_timeout,
        stop_timeout=supervisor.stop_timeout,
    )


def _kine_flags(kine: kine_settings.KineSettings) -> list[str]:
    flags = ["--compact-interval", repr(kine.compact_interval)]
    if kine.listen_address:
        flags += ["--listen-address", kine.listen_address]
    if kine.metrics_address:
        flags += ["--metrics-address", kine.metrics_address]
    return flags


def kine_target(kine: kine_settings.KineSettings) -> str:
    """Where a gRPC client reaches kine: its unix socket, or loopback for a wildcard listen address."""
    if not kine.listen_address:
        return f"unix:{(kine.data_dir / 'server' / 'kine.sock').resolve()}"
    address = kine.listen_address.split("://", 1)[-1]
    host, _, port = address.rpartition(":")
    loopback = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "[::]": "[::1]", "::": "[::1]"}
    return f"{loopback.get(host, host)}:{port}"
