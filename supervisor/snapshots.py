"""``k3s-supervisor etcd-snapshot save|ls|delete|prune`` and ``start --cluster-reset``: snapshot files.

Snapshots are files in ``<data-dir>/server/db/snapshots`` (or ``--etcd-snapshot-dir``), named as
K3s names them: ``<name>-<node>-<unix time>``, plus ``.zip`` when compressed (a zip holding the one
snapshot file). ``on-demand`` is the default name of ``save``; scheduled snapshots are
``etcd-snapshot-...`` (``snapshot_schedule.py``). What goes into a file is the kine layer's
business (``services/kine/snapshot``): the same portable file for SQLite, PostgreSQL and MySQL,
etcd's own snapshot for a real etcd.

Unlike K3s, whose command asks the running server to take the snapshot, these commands work on
the datastore and the directory directly, so they also work while the server is down. Taking one
while the server runs is safe (every datastore is read at one consistent point).

With ``--etcd-s3`` (``s3.py``), K3s's behaviour on top: ``save`` and scheduled snapshots upload the
file after writing it (the local copy stays), ``ls`` lists both places, ``delete`` deletes from
both, ``prune`` and the schedule apply the retention to each place separately, and a restore path
that is a bare name is downloaded from the bucket into the snapshot directory first.

A restore (``start --cluster-reset --cluster-reset-restore-path=FILE``) runs before any component
starts: the kine layer moves the old data aside and loads the file, this module leaves the
``reset-flag`` marker K3s leaves, and the server then starts normally. A later start with
``--cluster-reset`` still given refuses while the marker exists (restoring again would silently
drop everything written since); a start without it removes the marker.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import re
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from services.kine import snapshot as kine_snapshot
from supervisor import config, s3

if TYPE_CHECKING:
    from services.kine import client

log = logging.getLogger(__name__)

RESET_FLAG = "reset-flag"
ZIP_SUFFIX = ".zip"
_TIMESTAMP = re.compile(r"-(\d+)$")


@dataclasses.dataclass(frozen=True)
class SnapshotFile:
    name: str  # the file name, as ls shows it and delete takes it
    location: str  # file:///... or s3://<bucket>/<key>
    size: int
    created: datetime.datetime
    path: Path | None = None  # the local file; None in S3

    @classmethod
    def local(cls, path: Path) -> SnapshotFile:
        return cls(name=path.name, location=path.absolute().as_uri(), size=path.stat().st_size,
                   created=created_at(path), path=path)  # fmt: skip


def snapshot_dir(settings: config.Settings) -> Path:
    configured = settings.snapshots.dir
    return configured if configured is not None else db_dir(settings) / "snapshots"


def db_dir(settings: config.Settings) -> Path:
    return settings.supervisor.data_dir / "server" / "db"


def created_at(path: Path) -> datetime.datetime:
    """The time in the name (K3s's names end with Unix seconds), else the file's modification time."""
    return named_time(path.name) or datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.UTC)


def named_time(name: str) -> datetime.datetime | None:
    match = _TIMESTAMP.search(name.removesuffix(ZIP_SUFFIX))
    return datetime.datetime.fromtimestamp(int(match.group(1)), datetime.UTC) if match else None


def list_snapshots(directory: Path) -> list[SnapshotFile]:
    """Every snapshot in ``directory``, oldest first (ties by name); partial files are skipped."""
    if not directory.is_dir():
        return []
    found = [
        SnapshotFile.local(path)
        for path in directory.iterdir()
        if path.is_file() and not path.name.startswith(".")
    ]
    return oldest_first(found)


def oldest_first(items: Sequence[SnapshotFile]) -> list[SnapshotFile]:
    return sorted(items, key=lambda item: (item.created, item.name, item.location))


def store_for(settings: config.Settings) -> s3.Store | None:
    """The S3 bucket with ``--etcd-s3``, else None."""
    if not settings.snapshots.s3:
        return None
    return s3.Store(settings.snapshots, node=settings.cluster.node_name)


async def list_remote(store: s3.Store) -> list[SnapshotFile]:
    """The snapshots in the bucket's folder, oldest first (the time in the name, else LastModified)."""
    epoch = datetime.datetime.fromtimestamp(0, datetime.UTC)
    found = [
        SnapshotFile(name=item.name, location=item.location, size=item.size,
                     created=named_time(item.name) or item.modified or epoch)  # fmt: skip
        for item in await store.list()
    ]
    return oldest_first(found)


# -- save, delete, prune --------------------------------------------------------------------------


async def save(settings: config.Settings, *, name: str, now: datetime.datetime | None = None) -> SnapshotFile:
    """Take a snapshot named ``<name>-<node>-<unix time>`` (``.zip`` if compressing)."""
    moment = now or datetime.datetime.now(datetime.UTC)
    node = settings.cluster.node_name
    base = f"{name}-{node}-{int(moment.timestamp())}"
    directory = snapshot_dir(settings)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    final = directory / (base + (ZIP_SUFFIX if settings.snapshots.compress else ""))
    if final.exists():
        raise kine_snapshot.SnapshotError(f"snapshot {final.name} already exists")
    # Built under a hidden name (ls skips it), so a crash never leaves a truncated snapshot listed.
    partial = directory / f".{base}.partial"
    try:
        info = await kine_snapshot.save(
            settings.kine.datastore_endpoint,
            partial,
            data_dir=settings.supervisor.data_dir,
            meta={"node": node, "name": name, "created": str(int(moment.timestamp()))},
            tls=datastore_tls(settings),
        )
        if settings.snapshots.compress:
            _zip(partial, inner_name=base)
        partial.chmod(0o600)  # the whole cluster's state, Secrets included
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    log.info("snapshot %s saved (revision %d)", final.name, info.revision)
    return SnapshotFile.local(final)


def delete(settings: config.Settings, names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Delete the named snapshots; return (deleted, not found)."""
    directory = snapshot_dir(settings)
    deleted, missing = [], []
    for name in names:
        path = directory / name
        if not is_snapshot_name(name) or not path.is_file():
            missing.append(name)
            continue
        path.unlink()
        deleted.append(name)
        log.info("snapshot %s deleted", name)
    return deleted, missing


def prune(settings: config.Settings, *, name: str, retention: int) -> list[str]:
    """Delete the oldest ``<name>-<node>-*`` snapshots beyond the newest ``retention`` (0 keeps all)."""
    doomed = beyond_retention(list_snapshots(snapshot_dir(settings)), settings, name=name, retention=retention)
    return delete(settings, doomed)[0]


async def prune_remote(settings: config.Settings, store: s3.Store, *, name: str, retention: int) -> list[str]:
    """``prune`` in the bucket: the same rule, applied to the S3 snapshots on their own."""
    doomed = beyond_retention(await list_remote(store), settings, name=name, retention=retention)
    return [item for item in doomed if await store.delete(item)]


def beyond_retention(
    items: Sequence[SnapshotFile], settings: config.Settings, *, name: str, retention: int
) -> list[str]:
    """The names of the oldest ``<name>-<node>-*`` of ``items`` (oldest first) past ``retention``."""
    if retention < 1:
        return []
    prefix = f"{name}-{settings.cluster.node_name}-"
    mine = [item.name for item in items if item.name.startswith(prefix)]
    return mine[: max(0, len(mine) - retention)]


def is_snapshot_name(name: str) -> bool:
    """A name as ls shows it: never a path, never a hidden (partial) file."""
    return bool(name) and "/" not in name and not name.startswith(".")


async def upload(store: s3.Store, saved: SnapshotFile) -> str:
    """Upload a snapshot just saved; return its S3 location. A failure says the local copy stays."""
    assert saved.path is not None
    try:
        await store.upload(saved.path)
    except s3.S3Error as exc:
        raise s3.S3Error(f"snapshot {saved.name} was saved locally but not uploaded: {exc}") from None
    return store.location(saved.name)


async def download(settings: config.Settings, store: s3.Store, name: str) -> Path:
    """Fetch the S3 snapshot ``name`` into the snapshot directory (as K3s does before a restore)."""
    if not is_snapshot_name(name):
        raise config.ConfigError(f"cluster-reset-restore-path: {name!r} is not a snapshot name")
    await store.check()
    directory = snapshot_dir(settings)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = directory / f".{name}.partial"  # hidden from ls until complete, as save does
    try:
        await store.download(name, partial)
        os.replace(partial, directory / name)
    finally:
        partial.unlink(missing_ok=True)
    return directory / name


def _zip(path: Path, *, inner_name: str) -> None:
    """Replace ``path`` by a zip archive holding it as ``inner_name``."""
    packed = path.with_name(path.name + ".zip-partial")
    try:
        with zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.write(path, arcname=inner_name)
        os.replace(packed, path)
    finally:
        packed.unlink(missing_ok=True)


@contextlib.contextmanager
def plain_file(path: Path) -> Iterator[Path]:
    """``path`` itself, or the snapshot inside it when it is a zip (extracted to a temporary file)."""
    if not zipfile.is_zipfile(path):
        yield path
        return
    with zipfile.ZipFile(path) as archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        if len(members) != 1:
            raise kine_snapshot.SnapshotError(f"{path}: a compressed snapshot holds exactly one file")
        with tempfile.TemporaryDirectory(prefix=".restore-", dir=path.parent) as tmp:
            target = Path(tmp) / "snapshot"
            with archive.open(members[0]) as source, target.open("wb") as out:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
            yield target


def datastore_tls(settings: config.Settings) -> client.TlsFiles | None:
    """The TLS files for an https etcd datastore (``--datastore-cafile/-certfile/-keyfile``)."""
    from services.kine import client

    api = settings.apiserver
    if not (api.store_cafile or api.store_certfile or api.store_keyfile):
        return None
    return client.TlsFiles(ca=api.store_cafile, cert=api.store_certfile, key=api.store_keyfile)


# -- the commands -------------------------------------------------------------------------------------

# K3s's subcommands: (name, aliases, help).
ACTIONS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("save", (), "take a snapshot now (<name>-<node>-<unix time>)"),
    ("ls", ("list", "l"), "list the snapshots: Name, Location, Size, Created"),
    ("delete", (), "delete the snapshots named"),
    ("prune", (), "delete the oldest <name>-<node> snapshots beyond --etcd-snapshot-retention"),
)
S3_PREFIX = "etcd-s3"  # etcd-snapshot also takes --etcd-s3-bucket as --s3-bucket, as K3s does


def add_arguments(parser: argparse.ArgumentParser, action: str) -> None:
    """What the option table cannot say: K3s's short spellings, and the names ``delete`` takes."""
    parser.set_defaults(snapshot_action=action)
    parser.add_argument(
        "--dir", dest="etcd-snapshot-dir", default=argparse.SUPPRESS, metavar="DIR",
        help="same as --etcd-snapshot-dir",
    )  # fmt: skip
    if action == "save":
        parser.add_argument(
            "--snapshot-compress", dest="etcd-snapshot-compress", action="store_true",
            default=argparse.SUPPRESS, help="same as --etcd-snapshot-compress",
        )  # fmt: skip
    if action == "prune":
        parser.add_argument(
            "--snapshot-retention", dest="etcd-snapshot-retention", default=argparse.SUPPRESS, metavar="N",
            help="same as --etcd-snapshot-retention",
        )  # fmt: skip
    for option in config.OPTIONS:
        if option.key.startswith(S3_PREFIX):
            short = "--" + option.key.removeprefix("etcd-")
            extra = {"action": "store_true"} if option.switch else {"metavar": option.metavar}
            parser.add_argument(short, dest=option.key, default=argparse.SUPPRESS,
                                help=f"same as --{option.key}", **extra)  # fmt: skip
    if action == "delete":
        parser.add_argument("snapshots", nargs="*", metavar="NAME", help="snapshot names, as ls shows them")


async def run_command(settings: config.Settings, action: str, names: Sequence[str] = ()) -> int:
    """One ``etcd-snapshot`` subcommand; output on stdout as K3s prints it."""
    snapshots = settings.snapshots
    store = store_for(settings)
    if store is not None:
        await store.check()  # a missing bucket or a bad key fails before any work, as in K3s
    if action == "save":
        saved = await save(settings, name=snapshots.name)
        print(f"Snapshot {saved.name} saved.", flush=True)
        if store is not None:
            print(f"Snapshot {saved.name} uploaded to {await upload(store, saved)}.", flush=True)
    elif action == "delete":
        await _delete_everywhere(settings, store, names)
    elif action == "prune":
        for name in prune(settings, name=snapshots.name, retention=snapshots.retention):
            print(f"Snapshot {name} deleted.", flush=True)
        if store is not None:
            for name in await prune_remote(settings, store, name=snapshots.name, retention=snapshots.retention):
                print(f"Snapshot {name} deleted from {store.location(name)}.", flush=True)
    else:
        items = list_snapshots(snapshot_dir(settings)) + (await list_remote(store) if store is not None else [])
        print(render(oldest_first(items), fmt=snapshots.list_format, settings=settings), end="")
    return 0


async def _delete_everywhere(settings: config.Settings, store: s3.Store | None, names: Sequence[str]) -> None:
    if not names:
        raise config.ConfigError("no snapshots given for removal")
    deleted = set(delete(settings, names)[0])
    for name in names:
        found = name in deleted
        if found:
            print(f"Snapshot {name} deleted.", flush=True)
        if store is not None and is_snapshot_name(name) and await store.delete(name):
            found = True
            print(f"Snapshot {name} deleted from {store.location(name)}.", flush=True)
        if not found:
            log.warning("Snapshot %s not found.", name)


def render(items: Sequence[SnapshotFile], *, fmt: str, settings: config.Settings) -> str:
    if fmt == "table":
        rows = [("Name", "Location", "Size", "Created")]
        rows += [(item.name, item.location, str(item.size), rfc3339(item.created)) for item in items]
        return table(rows)
    document = {
        "apiVersion": "k3s.cattle.io/v1",
        "kind": "ETCDSnapshotFileList",
        "items": [_as_object(item, settings=settings) for item in items],
    }
    if fmt == "json":
        return json.dumps(document, indent=4) + "\n"
    import yaml

    return yaml.safe_dump(document, sort_keys=False)


def _as_object(item: SnapshotFile, *, settings: config.Settings) -> dict[str, object]:
    return {
        "metadata": {"name": item.name},
        "spec": {
            "snapshotName": item.name,
            "nodeName": "s3" if item.path is None else settings.cluster.node_name,  # K3s's "s3" node
            "location": item.location,
        },
        "status": {"size": str(item.size), "creationTime": rfc3339(item.created), "readyToUse": True},
    }


def table(rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell plus one space, like Go's tabwriter (padding 1)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "".join(cell.ljust(width + 1) for cell, width in zip(row[:-1], widths, strict=True)) + row[-1]
        for row in rows
    ]
    return "\n".join(lines) + "\n"


def rfc3339(moment: datetime.datetime) -> str:
    """Go's time.RFC3339 in local time: ``Z`` for UTC, else the offset."""
    local = moment.astimezone()
    text = local.isoformat(timespec="seconds")
    return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text


# -- restore at start ------------------------------------------------------------------------------


async def reset(settings: config.Settings) -> None:
    """``--cluster-reset [--cluster-reset-restore-path=FILE]``, before anything starts."""
    snapshots = settings.snapshots
    marker = db_dir(settings) / RESET_FLAG
    if not snapshots.cluster_reset:
        if snapshots.cluster_reset_restore_path is not None:
            raise config.ConfigError("cluster-reset-restore-path is only used with cluster-reset")
        marker.unlink(missing_ok=True)  # a normal start after a reset, as K3s does
        return
    if marker.exists():
        raise config.ConfigError(
            f"this server was already reset ({marker.read_text().strip()}); remove cluster-reset and "
            "cluster-reset-restore-path and start it normally"
        )
    source = snapshots.cluster_reset_restore_path
    if source is None:
        log.info("cluster-reset without a restore path: there is no etcd membership to reset; starting")
        return
    store = store_for(settings)
    if store is not None and len(source.parts) == 1:  # a bare name: the snapshot in the bucket
        source = await download(settings, store, source.name)
    source = source.expanduser().absolute()
    if not source.is_file():
        raise config.ConfigError(f"cluster-reset-restore-path: {source} does not exist")
    with plain_file(source) as plain:
        restored = await kine_snapshot.restore(
            settings.kine.datastore_endpoint, plain, data_dir=settings.supervisor.data_dir
        )
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"restored from {source} at {int(time.time())}\n")
    log.info(
        "restored %s (revision %d, %d rows) into %s; the old data is in %s",
        source, restored.info.revision, restored.info.rows, restored.datastore, restored.backup or "(none)",
    )  # fmt: skip
