"""Where an app's files and its containers' settings go on the runtimes that run containers as
local processes (`local`, `zygote`): the container path /root is the app version's folder, other
container paths are the host's. A sandboxed or remote runtime would place them its own way.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..._image import MOUNT_BLOBS, ROOT
from ..._image_steps import ImageSpec
from ..images import ImageBuildError
from ..isolation import MINIMAL_PATH


def local_path(remote: str, files_dir: Path) -> Path:
    """Where a container path is on the local runtime: /root is the app version's folder."""
    if remote == ROOT or remote.startswith(ROOT + "/"):
        return files_dir / remote[len(ROOT) + 1:]
    return Path(remote)


def check_local_runtime(images: list[ImageSpec]) -> None:
    """What the local runtime cannot honour, found before anything is built."""
    placed: dict[str, str] = {}
    for spec in images:
        for local, remote, sha in spec.local_files():
            if not (remote == ROOT or remote.startswith(ROOT + "/")):
                raise ImageBuildError(
                    f"add_local_*({local!r} -> {remote!r}): the local runtime places local files only below {ROOT} "
                    f"(the app's folder, where containers start). Use a remote path below {ROOT} or a relative one, "
                    "or a sandboxed runtime for other places."
                )
            if placed.setdefault(remote, sha) != sha:
                raise ImageBuildError(f"Two images of this app put different files at {remote}; the local runtime "
                                      "shares one app folder between them. Give one of them another remote path.")
        workdir = spec.workdir
        if not (workdir == ROOT or workdir.startswith(ROOT + "/")) and not Path(workdir).is_dir():
            raise ImageBuildError(
                f"workdir({workdir!r}): no such folder on this machine. The local runtime runs containers in the "
                f"host's filesystem: use a path below {ROOT} (the app's folder) or one that exists, or a sandboxed runtime."
            )


def place_files(images: list[ImageSpec], files_dir: Path) -> None:
    """Copy the images' local files (sent with the deploy) into the app version's folder."""
    blobs = files_dir / MOUNT_BLOBS
    try:
        for spec in images:
            for local, remote, sha in spec.local_files():
                source = blobs / sha
                if not source.is_file():
                    raise ImageBuildError(f"The deploy request lacks the contents of {local}; use a wisp CLI of the "
                                          "same version as the server.")
                dest = local_path(remote, files_dir)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)
            workdir = local_path(spec.workdir, files_dir)
            if files_dir in (workdir, *workdir.parents):
                workdir.mkdir(parents=True, exist_ok=True)
    finally:
        shutil.rmtree(blobs, ignore_errors=True)


def container_settings(spec: ImageSpec, python: Path, files_dir: Path) -> tuple[dict[str, str], Path]:
    """The environment variables and working directory of the image's containers."""
    venv = python.parent.parent
    env = {"VIRTUAL_ENV": str(venv), "PATH": os.pathsep.join([str(venv / "bin"), MINIMAL_PATH])}  # not the server's PATH
    env.update(spec.env)
    cwd = local_path(spec.workdir, files_dir)
    env["WISP_WORKDIR"] = str(cwd)
    return env, cwd


__all__ = ["check_local_runtime", "container_settings", "local_path", "place_files"]
