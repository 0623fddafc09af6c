"""The ``k3s-supervisor`` command line: parse, load the settings once, run one command.

    k3s-supervisor start [--profile server|agent|edge] [flags]   the whole server
    k3s-supervisor run kine [flags]                              kine alone, in the foreground
    k3s-supervisor run nats [flags]                              the bundled NATS alone

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
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn, Protocol

import pydantic

import services.bus
from services.bus import types as bus_types
from services.kine import settings as kine_settings
from services.kine import types as kine_types
from supervisor import config, pki, process, profiles, tokens
from supervisor import nats as nats_server

logger = logging.getLogger(__name__)

PROG = "k3s-supervisor"
EXIT_OK = 0
EXIT_FAILED = 1  # a component died or the stop had to be forced
EXIT_USER_ERROR = process.PERMANENT_EXIT_CODE
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
    # gRPC's fork handlers complain on every child we start after a gRPC readiness probe; we never
    # use gRPC in a forked child, so they have nothing to protect. Must be set before grpc loads.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    try:
        args = build_parser().parse_args(argv)
        settings = config.load(config.flags_given(vars(args)), environ=os.environ)
        logging.getLogger().setLevel(logging.DEBUG if settings.supervisor.debug else logging.INFO)
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
    run_parser = commands.add_parser("run", help="run one component in the foreground, for debugging")
    components = run_parser.add_subparsers(
        dest="component", required=True, metavar="COMPONENT", parser_class=Parser
    )
    add_options(components.add_parser("kine", help="kine: etcd v3 API on a SQL datastore"), "run kine")
    add_options(components.add_parser("nats", help="the bundled nats-server, on loopback"), "run nats")
    add_options(components.add_parser("apiserver", help="the Kubernetes API server (HTTPS)"), "run apiserver")
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

    api_settings = settings.apiserver.model_copy(update={"store_address": kine_target(settings.kine)})
    component = apiserver.ApiServer(api_settings)

    def ready() -> None:
        if settings.supervisor.write_kubeconfig is not None:
            profiles.write_admin_kubeconfig(settings, port=component.port)

    return await serve(component, name="apiserver", on_ready=ready)


async def start(settings: config.Settings) -> int:
    profile = settings.supervisor.profile
    if profile == "agent":
        raise StartError("the agent profile is not implemented yet")
    config.prepare_data_dir(settings.supervisor.data_dir)
    _check_kubeconfig_mode(settings)
    component: Component
    if profile == "edge":
        profiles.prepare(settings)
        component = profiles.Edge(settings)
        return await serve(component, name=f"{PROG} ({profile} profile)")
    settings = profiles.fixed_port(settings)
    profiles.prepare(settings)
    children = server_children(settings)
    component = process.ProcessManager(children, backoff=backoff(settings.supervisor))
    port = settings.apiserver.https_listen_port
    return await serve(
        component,
        name=f"{PROG} ({profile} profile)",
        on_ready=lambda: profiles.write_admin_kubeconfig(settings, port=port),
    )


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
            probe=profiles.readyz_probe(settings),
        )
    )
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
