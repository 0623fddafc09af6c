"""How the process runtime turns a container's ``image`` into something it can run.

There is no registry and no image store: an image is either a root filesystem installed by hand
under ``<root_dir>/images/<name>`` (optionally ``<name>:<tag>``, with an OCI-style config beside it
in ``<name>.json``: ``Entrypoint``, ``Cmd``, ``Env``, ``WorkingDir``), or it is just a label and the
command runs on the host. With no command in the pod and no entrypoint in a local image, a small
table of well-known images names one (pause images sleep forever, busybox and alpine start
``sh``); anything else fails with ``CreateContainerError`` and a message pointing at the docs.
See docs/agent-runtime.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from services.agent.runtimes import types

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The pause image's binary sleeps until SIGTERM or SIGINT, then exits 0. ``sleep`` alone would not:
# as pid 1 of a pod's pid namespace it ignores SIGTERM, and deleting the pod would take its whole
# grace period. The shell's trap ends it at once; the runtime signals the process group, so the
# ``sleep`` goes too.
PAUSE = ["/bin/sh", "-c", 'trap "exit 0" TERM INT; sleep infinity & wait']
WELL_KNOWN: dict[str, list[str]] = {
    "pause": PAUSE,
    "mirrored-pause": PAUSE,
    "busybox": ["sh"],
    "alpine": ["/bin/sh"],
}


@dataclasses.dataclass(frozen=True, slots=True)
class Image:
    ref: str
    name: str  # normalised: no docker.io/library/, no tag or digest
    tag: str
    rootfs: Path | None
    image_id: str
    entrypoint: list[str] = dataclasses.field(default_factory=list)
    cmd: list[str] = dataclasses.field(default_factory=list)
    env: list[str] = dataclasses.field(default_factory=list)
    working_dir: str = ""


def normalize(ref: str) -> tuple[str, str]:
    """``docker.io/library/busybox:1.36`` -> (``busybox``, ``1.36``); digests count as tags."""
    name, tag = ref, "latest"
    if "@" in name:
        name, tag = name.split("@", 1)
    elif ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/library/", "library/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return name, tag


def resolve(images_dir: Path, ref: str) -> Image:
    """Find the image's local root filesystem, if any, and its config."""
    name, tag = normalize(ref)
    if ".." in Path(name).parts or name.startswith("/"):
        raise types.ContainerError("InvalidImageName", f'invalid image name "{ref}"')
    for candidate in (images_dir / f"{name}:{tag}", images_dir / name):
        if candidate.is_dir():
            config = _config(candidate.with_name(candidate.name + ".json"))
            digest = hashlib.sha256(f"rootfs:{candidate}".encode()).hexdigest()
            return Image(
                ref, name, tag, candidate, f"sha256:{digest}",
                entrypoint=list(config.get("Entrypoint") or []), cmd=list(config.get("Cmd") or []),
                env=list(config.get("Env") or []), working_dir=config.get("WorkingDir") or "",
            )  # fmt: skip
    digest = hashlib.sha256(f"host:{name}:{tag}".encode()).hexdigest()
    return Image(ref, name, tag, None, f"sha256:{digest}")


def _config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    config = data.get("config", data) if isinstance(data, dict) else {}
    return config if isinstance(config, dict) else {}


def argv(image: Image, container: Mapping[str, Any]) -> list[str]:
    """Docker's rule: ``command`` replaces the entrypoint, ``args`` the image's cmd."""
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if command:
        return command + args
    entrypoint = image.entrypoint or WELL_KNOWN.get(image.name.rsplit("/", 1)[-1], [])
    if not entrypoint and not image.cmd:
        raise types.ContainerError(
            "CreateContainerError",
            f'image "{image.ref}" has no local root filesystem with an entrypoint and the container '
            "sets no command (see docs/agent-runtime.md)",
        )
    return entrypoint + (args or (image.cmd if image.entrypoint or not entrypoint else []))


def base_env(image: Image) -> dict[str, str]:
    env = {"PATH": DEFAULT_PATH}
    for item in image.env:
        key, _, value = item.partition("=")
        env[key] = value
    return env
