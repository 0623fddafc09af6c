"""The snapshot settings group: K3s's ``--etcd-snapshot-*``, ``--etcd-s3*`` and ``--cluster-reset*`` options.

The S3 fields are flat (``s3_bucket``, not ``s3.bucket``) because every option fills one field of
one group; ``supervisor/s3.py`` reads them as a whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic

# A snapshot base name becomes part of a file name: no path separators, no leading dot.
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"


class SnapshotSettings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    disable: bool = pydantic.Field(
        default=False, description="--etcd-disable-snapshots: take no scheduled snapshots."
    )
    schedule_cron: str = pydantic.Field(
        default="0 */12 * * *",
        description="When scheduled snapshots are taken, a cron line (K3s: at 00:00 and 12:00, local time).",
    )
    retention: int = pydantic.Field(
        default=5,
        ge=0,
        description="Snapshots of one base name and node kept by pruning (K3s: 5); 0 keeps them all.",
    )
    dir: Path | None = pydantic.Field(
        default=None, description="Where snapshots go; None: <data-dir>/server/db/snapshots."
    )
    compress: bool = pydantic.Field(
        default=False, description="Zip each snapshot (<name>.zip), as K3s's --etcd-snapshot-compress does."
    )
    scheduled_name: str = pydantic.Field(
        default="etcd-snapshot",
        pattern=NAME_PATTERN,
        description="--etcd-snapshot-name: base name of scheduled snapshots.",
    )
    name: str = pydantic.Field(
        default="on-demand",
        pattern=NAME_PATTERN,
        description="etcd-snapshot save/prune --name: base name of on-demand snapshots.",
    )
    list_format: Literal["table", "json", "yaml"] = pydantic.Field(
        default="table", description="etcd-snapshot ls --output: table (K3s's columns), json or yaml."
    )
    cluster_reset: bool = pydantic.Field(
        default=False,
        description="--cluster-reset: with a restore path, load that snapshot before starting.",
    )
    cluster_reset_restore_path: Path | None = pydantic.Field(
        default=None, description="--cluster-reset-restore-path: the snapshot file to restore."
    )
    s3: bool = pydantic.Field(
        default=False,
        description="--etcd-s3: also keep snapshots in an S3 bucket (upload, list, delete, prune, restore).",
    )
    s3_endpoint: str = pydantic.Field(
        default="s3.amazonaws.com", description="--etcd-s3-endpoint: host[:port] of the S3 API, no scheme."
    )
    s3_endpoint_ca: str = pydantic.Field(
        default="",
        description="--etcd-s3-endpoint-ca: CA bundle(s) to trust for the endpoint: file paths, or "
        "base64 of PEM, separated by spaces (as K3s reads it); empty: the system's roots.",
    )
    s3_skip_ssl_verify: bool = pydantic.Field(
        default=False, description="--etcd-s3-skip-ssl-verify: do not verify the endpoint's certificate."
    )
    s3_access_key: pydantic.SecretStr = pydantic.Field(
        default=pydantic.SecretStr(""), description="--etcd-s3-access-key (AWS_ACCESS_KEY_ID)."
    )
    s3_secret_key: pydantic.SecretStr = pydantic.Field(
        default=pydantic.SecretStr(""), description="--etcd-s3-secret-key (AWS_SECRET_ACCESS_KEY)."
    )
    s3_bucket: str = pydantic.Field(default="", description="--etcd-s3-bucket: required with --etcd-s3.")
    s3_region: str = pydantic.Field(
        default="us-east-1", description="--etcd-s3-region: the bucket's region (K3s: us-east-1)."
    )
    s3_folder: str = pydantic.Field(
        default="", description="--etcd-s3-folder: key prefix (a 'folder') of the snapshots in the bucket."
    )
    s3_insecure: bool = pydantic.Field(
        default=False, description="--etcd-s3-insecure: plain HTTP instead of HTTPS."
    )
    s3_proxy: str = pydantic.Field(
        default="",
        description="--etcd-s3-proxy: http(s)://host:port of a proxy for every S3 request; without it the "
        "HTTP_PROXY/HTTPS_PROXY/NO_PROXY variables apply, as they do for K3s.",
    )
    s3_timeout: float = pydantic.Field(
        default=300.0,
        gt=0,
        description="--etcd-s3-timeout in seconds (K3s: 5m): connect and read timeout of each S3 request.",
    )
