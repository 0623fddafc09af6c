"""Snapshots of a real etcd (``--datastore-endpoint http(s)://...``) through its Maintenance API.

``Maintenance.Snapshot`` streams etcd's whole backend database (a bbolt file, with the SHA-256
etcd appends for ``etcdutl snapshot restore`` to check); the chunks are written as they come, so
the file is byte for byte what ``etcdctl snapshot save`` would write. etcd takes it from one
read transaction, so it is consistent while writes continue. Restoring one is etcd's business
(``etcdutl snapshot restore`` into a new data dir, then restart etcd on it): we do not manage
that etcd's data directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import grpc.aio

from services.kine import client
from services.kine.proto import rpc_pb2
from services.kine.snapshot import fileformat

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0  # seconds for the first connection
TIMEOUT = 600.0  # seconds for the whole transfer


async def save(address: str, target: Path, *, tls: client.TlsFiles | None = None) -> fileformat.Info:
    """Stream the snapshot of the etcd at ``address`` into ``target``."""
    try:
        grpc_target, secure = client.parse_address(address, tls=tls)
    except ValueError as exc:
        raise fileformat.SnapshotError(str(exc)) from None
    if secure:
        channel = grpc.aio.secure_channel(grpc_target, (tls or client.TlsFiles()).credentials())
    else:
        channel = grpc.aio.insecure_channel(grpc_target)
    try:
        status = channel.unary_unary(
            "/etcdserverpb.Maintenance/Status",
            request_serializer=rpc_pb2.StatusRequest.SerializeToString,
            response_deserializer=rpc_pb2.StatusResponse.FromString,
        )
        snapshot = channel.unary_stream(
            "/etcdserverpb.Maintenance/Snapshot",
            request_serializer=rpc_pb2.SnapshotRequest.SerializeToString,
            response_deserializer=rpc_pb2.SnapshotResponse.FromString,
        )
        answer = await status(rpc_pb2.StatusRequest(), timeout=CONNECT_TIMEOUT, wait_for_ready=True)
        size = 0
        with target.open("wb") as file:
            async for chunk in snapshot(rpc_pb2.SnapshotRequest(), timeout=TIMEOUT):
                file.write(chunk.blob)
                size += len(chunk.blob)
    except grpc.aio.AioRpcError as exc:
        raise fileformat.SnapshotError(
            f"etcd snapshot from {address} failed: {exc.code().name}: {exc.details()}"
        ) from None
    finally:
        await channel.close()
    log.info("etcd snapshot of %s: %d bytes at revision %d", address, size, answer.header.revision)
    return fileformat.Info(kind="etcd", revision=answer.header.revision)
