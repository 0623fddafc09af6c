"""Snapshots in an S3 bucket, as K3s's ``--etcd-s3*`` options keep them.

A snapshot is one object, ``<folder>/<file name>`` (just the file name without a folder), holding
the file exactly as it lies in the snapshot directory (zipped or not); its user metadata names the
node that took it (``x-amz-meta-k3s-node-name``, K3s's header). Only objects directly in the
folder count as snapshots: K3s's ``.metadata/`` side objects and any deeper "folder" are left
alone.

The client is ``minio`` (small, synchronous, speaks to AWS and every S3-compatible server): each
call runs on a worker thread (``asyncio.to_thread``), so a slow endpoint never blocks the event
loop the scheduled snapshots share with the server. Its HTTP pool is ours, so that
``--etcd-s3-timeout`` bounds every connect and read, ``--etcd-s3-endpoint-ca`` and
``--etcd-s3-skip-ssl-verify`` choose the TLS trust, and a dead endpoint fails after a few quick
retries rather than minio's default of five.

Every failure (the endpoint down, a bad key, a missing bucket or object, a configuration that
cannot work) becomes one ``S3Error`` whose message is one line naming what was attempted and why
it failed, never a key: the CLI prints it and exits 2, the scheduler logs it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import datetime
import ipaddress
import logging
import ssl
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import minio

    from supervisor import snapshot_settings

log = logging.getLogger(__name__)

T = TypeVar("T")
NODE_METADATA = "k3s-node-name"  # sent as x-amz-meta-k3s-node-name, as K3s sends it
RETRIES = 2  # after the first try, for 5xx answers


class S3Error(Exception):
    """An S3 operation or configuration that failed; the message is one line, with no secret."""


@dataclasses.dataclass(frozen=True)
class RemoteObject:
    name: str  # the file name, as ls shows it and delete takes it
    location: str  # s3://<bucket>/<key>
    size: int
    modified: datetime.datetime | None


class Store:
    """One bucket and folder, reached with the ``--etcd-s3*`` settings."""

    def __init__(self, settings: snapshot_settings.SnapshotSettings, *, node: str) -> None:
        if not settings.s3_bucket:
            raise S3Error("etcd-s3-bucket is required with etcd-s3")
        access = settings.s3_access_key.get_secret_value()
        secret = settings.s3_secret_key.get_secret_value()
        if bool(access) != bool(secret):
            raise S3Error("etcd-s3-access-key and etcd-s3-secret-key go together")
        self.bucket = settings.s3_bucket
        self.folder = settings.s3_folder.strip("/")
        self.node = node
        scheme = "http" if settings.s3_insecure else "https"
        self.endpoint_url = f"{scheme}://{settings.s3_endpoint}"
        self._client = _client(settings, access=access, secret=secret)

    # -- names and keys --------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return f"{self.folder}/" if self.folder else ""

    def key(self, name: str) -> str:
        return self.prefix + name

    def location(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(name)}"

    # -- operations ---------------------------------------------------------------------------------

    async def check(self) -> None:
        """Fail unless the bucket exists and the credentials may see it (K3s checks first, too)."""
        exists = await self._run(f"checking bucket {self.bucket}", self._client.bucket_exists, self.bucket)
        if not exists:
            raise S3Error(f"S3 bucket {self.bucket} does not exist at {self.endpoint_url}")

    async def upload(self, path: Path) -> None:
        """Put the snapshot file ``path`` into the folder under its own name."""
        key = self.key(path.name)
        content_type = "application/zip" if path.suffix == ".zip" else "application/octet-stream"
        await self._run(
            f"uploading {path.name} to {self.location(path.name)}",
            self._client.fput_object, self.bucket, key, str(path),
            content_type=content_type, metadata={NODE_METADATA: self.node},
        )  # fmt: skip
        log.info("snapshot %s uploaded to %s", path.name, self.location(path.name))

    async def download(self, name: str, target: Path) -> None:
        """Fetch the snapshot ``name`` into the file ``target``, readable by its owner only."""

        def fetch() -> None:
            self._client.fget_object(self.bucket, self.key(name), str(target))
            target.chmod(0o600)  # the whole cluster's state, Secrets included

        await self._run(f"downloading {self.location(name)}", fetch)
        log.info("snapshot %s downloaded from %s", name, self.location(name))

    async def list(self) -> list[RemoteObject]:
        """The snapshots in the folder (empty objects and deeper folders skipped)."""

        def listing() -> list[RemoteObject]:
            found = []
            for item in self._client.list_objects(self.bucket, prefix=self.prefix or None, recursive=False):
                name = (item.object_name or "").removeprefix(self.prefix)
                if item.is_dir or not name or "/" in name or not item.size:
                    continue
                found.append(RemoteObject(name=name, location=self.location(name), size=item.size,
                                          modified=item.last_modified))  # fmt: skip
            return found

        return await self._run(f"listing s3://{self.bucket}/{self.prefix}", listing)

    async def delete(self, name: str) -> bool:
        """Delete the snapshot ``name``; False when there is no such object."""
        key = self.key(name)
        try:
            await self._run(f"looking up {self.location(name)}", self._client.stat_object, self.bucket, key)
        except _Missing:
            return False
        await self._run(f"deleting {self.location(name)}", self._client.remove_object, self.bucket, key)
        log.info("snapshot %s deleted from %s", name, self.location(name))
        return True

    async def _run(self, what: str, call: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``call`` on a worker thread, its failures as one S3Error line saying ``what`` failed."""
        try:
            return await asyncio.to_thread(call, *args, **kwargs)
        except Exception as exc:
            missing, reason = describe(exc, endpoint=self.endpoint_url)
            if reason is None:
                raise
            error = _Missing if missing else S3Error
            raise error(f"{what}: {reason}") from None


class _Missing(S3Error):
    """The object asked for does not exist (delete reports it as not found, not as a failure)."""


# -- the client and its errors -----------------------------------------------------------------------


def _client(settings: snapshot_settings.SnapshotSettings, *, access: str, secret: str) -> minio.Minio:
    import minio
    import minio.helpers
    import urllib3

    timeout = settings.s3_timeout
    options: dict[str, Any] = {
        "timeout": urllib3.Timeout(connect=timeout, read=timeout),
        # Only a busy server's 5xx answers are retried: an endpoint that refuses or drops the
        # connection fails at once, with one error line instead of a retry warning per attempt.
        "retries": urllib3.Retry(
            total=RETRIES, connect=0, read=0, other=0, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
        ),
    }
    if not settings.s3_insecure:
        options["ssl_context"] = _tls_context(settings)
    try:
        minio.helpers.check_bucket_name(settings.s3_bucket)
    except ValueError as exc:
        raise S3Error(f"etcd-s3-bucket: {exc}") from None
    proxy = _proxy(settings)
    http_client = urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)
    try:
        return minio.Minio(
            settings.s3_endpoint,
            access_key=access or None,  # none: anonymous requests, for a public bucket
            secret_key=secret or None,
            secure=not settings.s3_insecure,
            region=settings.s3_region or None,
            http_client=http_client,
        )
    except ValueError as exc:
        raise S3Error(f"etcd-s3-endpoint {settings.s3_endpoint!r}: {exc} (give host[:port], no scheme)") from None


def _proxy(settings: snapshot_settings.SnapshotSettings) -> str:
    """The proxy for S3 requests: ``--etcd-s3-proxy``, else the environment's (HTTPS_PROXY or
    HTTP_PROXY by the endpoint's scheme, unless NO_PROXY names the endpoint or, as Go's
    ProxyFromEnvironment decides, the endpoint is localhost or a loopback address), else none."""
    if settings.s3_proxy:
        parsed = urllib.parse.urlsplit(settings.s3_proxy)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise S3Error(f"etcd-s3-proxy {settings.s3_proxy!r}: give http://host:port or https://host:port")
        return settings.s3_proxy
    host = urllib.parse.urlsplit(f"//{settings.s3_endpoint}").hostname or ""
    if host == "localhost" or _is_loopback(host) or urllib.request.proxy_bypass(host):
        return ""
    return urllib.request.getproxies().get("http" if settings.s3_insecure else "https", "")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tls_context(settings: snapshot_settings.SnapshotSettings) -> ssl.SSLContext:
    """The system's roots, or ``--etcd-s3-endpoint-ca``'s; no verification with skip-ssl-verify."""
    if settings.s3_skip_ssl_verify:
        import urllib3

        log.warning("etcd-s3-skip-ssl-verify: the S3 endpoint's certificate is not verified")
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # said once, above
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if not settings.s3_endpoint_ca.strip():
        return ssl.create_default_context()
    bundles = [_ca_bundle(entry) for entry in settings.s3_endpoint_ca.split()]
    try:
        return ssl.create_default_context(cadata="\n".join(bundles))
    except ssl.SSLError as exc:
        raise S3Error(f"etcd-s3-endpoint-ca: no usable certificate ({exc.reason or exc})") from None


def _ca_bundle(entry: str) -> str:
    """One ``--etcd-s3-endpoint-ca`` entry: base64 of PEM (as K3s accepts), else a file's path."""
    try:
        decoded = base64.b64decode(entry, validate=True)
        if b"-----BEGIN" in decoded:
            return decoded.decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        pass
    try:
        return Path(entry).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise S3Error(
            f"etcd-s3-endpoint-ca: cannot read {entry}: {getattr(exc, 'strerror', None) or exc}"
        ) from None


_MISSING_CODES = frozenset({"NoSuchKey", "ResourceNotFound", "NoSuchObject"})


def describe(exc: BaseException, *, endpoint: str) -> tuple[bool, str | None]:
    """(the object was missing, one line on why ``exc`` happened), or (False, None) for a bug."""
    import minio.error
    import urllib3.exceptions

    if isinstance(exc, minio.error.S3Error):
        text = f"{exc.code}: {exc.message}" if exc.message else str(exc.code)
        return exc.code in _MISSING_CODES, text
    if isinstance(exc, minio.error.ServerError):
        return False, f"the S3 server answered HTTP {exc.status_code}"
    if isinstance(exc, minio.error.MinioException):
        return False, " ".join(str(exc).split())[:200]
    if isinstance(exc, OSError) and exc.filename:  # a local file, not the endpoint
        return False, f"{exc.strerror or exc}: {exc.filename}"
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if isinstance(exc, urllib3.exceptions.NewConnectionError):  # also a ConnectTimeoutError, by class
        return False, f"cannot reach {endpoint}: {_cause(exc)}"
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return False, f"{endpoint} did not answer in time (etcd-s3-timeout)"
    if isinstance(exc, urllib3.exceptions.SSLError | ssl.SSLError):
        return False, f"TLS with {endpoint} failed: {_cause(exc)}"
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return False, f"cannot reach {endpoint}: {_cause(exc)}"
    return False, None


def _cause(exc: BaseException) -> str:
    """The innermost OS or SSL reason (``Connection refused``), not urllib3's object dump."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) and seen.reason:
            return str(seen.reason)
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__
