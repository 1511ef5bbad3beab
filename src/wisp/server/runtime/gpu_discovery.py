"""This machine's GPUs, read once when the server starts: the hardware boundary of GPU placement.

In order: `WISP_GPU_INVENTORY` (a file in nvidia-smi's CSV form, for tests and for machines whose
driver wisp should not ask; an empty file means no GPU), NVML through `pynvml` when it imports,
then `nvidia-smi --query-gpu=index,name,uuid,memory.total,pci.bus_id --format=csv,noheader,nounits`.
Without any of them the machine has no GPU, and says why. A device's /dev/nvidiaN minor number
comes from NVML, or from /proc/driver/nvidia/gpus/<bus id>/information.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .gpus import Gpu, Inventory

INVENTORY_ENV = "WISP_GPU_INVENTORY"
QUERY = "index,name,uuid,memory.total,pci.bus_id"
NVIDIA_SMI_TIMEOUT = 10.0  # seconds; a wedged driver must not hang the server's start


def parse_csv(text: str) -> tuple[Gpu, ...]:
    """nvidia-smi's `--query-gpu=index,name,uuid,memory.total[,pci.bus_id] --format=csv,noheader`
    lines (with or without units); blank lines and `#` comments skipped. ValueError on a line
    that is none of these."""
    devices = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")]
        try:
            index, name, uuid, memory = fields[0], fields[1], fields[2], fields[3]
            memory_mb = int(memory.removesuffix("MiB").strip())
            devices.append(Gpu(int(index), name, uuid, memory_mb, _minor(fields[4]) if len(fields) > 4 else None))
        except (IndexError, ValueError):
            raise ValueError(f"line {number} {line!r} is not 'index, name, uuid, memory.total [MiB][, pci.bus_id]' "
                             "as nvidia-smi prints it") from None
    return tuple(devices)


def _minor(bus_id: str, root: Path = Path("/proc/driver/nvidia/gpus")) -> int | None:
    """The /dev/nvidiaN of the device at `bus_id` ("00000000:00:1E.0"), from the driver's /proc."""
    domain, _, rest = bus_id.lower().partition(":")
    try:
        info = (root / f"{domain[-4:]}:{rest}" / "information").read_text()
    except OSError:
        return None
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Device Minor" and value.strip().isdigit():
            return int(value.strip())
    return None


def _from_file(path: str) -> Inventory:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"{INVENTORY_ENV}={path}: {exc.strerror}; point it at a file of nvidia-smi's "
                         "CSV lines, or unset it to ask the driver") from None
    try:
        return Inventory(parse_csv(text), f"{INVENTORY_ENV}={path}")
    except ValueError as exc:
        raise ValueError(f"{INVENTORY_ENV}={path}: {exc}") from None


def _from_nvml() -> Inventory | None:
    try:
        nvml: Any = importlib.import_module("pynvml")
        nvml.nvmlInit()
    except Exception:  # not installed, or no driver: try nvidia-smi
        return None
    try:
        devices = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name, uuid = nvml.nvmlDeviceGetName(handle), nvml.nvmlDeviceGetUUID(handle)
            devices.append(Gpu(index, name.decode() if isinstance(name, bytes) else str(name),
                               uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                               int(nvml.nvmlDeviceGetMemoryInfo(handle).total) >> 20,
                               int(nvml.nvmlDeviceGetMinorNumber(handle))))
        return Inventory(tuple(devices), "NVML found none" if not devices else "NVML")
    except Exception:  # a half-working NVML: nvidia-smi may still answer
        return None
    finally:
        with contextlib.suppress(Exception):  # nothing to do about it
            nvml.nvmlShutdown()


def _from_nvidia_smi() -> Inventory | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        done = subprocess.run([smi, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"], capture_output=True,
                              text=True, timeout=NVIDIA_SMI_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Inventory((), f"nvidia-smi failed: {exc}")
    if done.returncode != 0:
        why = (done.stdout + done.stderr).strip().splitlines()
        return Inventory((), f"nvidia-smi failed: {why[0] if why else f'exit code {done.returncode}'}")
    try:
        devices = parse_csv(done.stdout)
    except ValueError as exc:
        return Inventory((), f"nvidia-smi's answer could not be read: {exc}")
    return Inventory(devices, "nvidia-smi" if devices else "nvidia-smi found none")


def discover(environ: Mapping[str, str] = os.environ) -> Inventory:
    """This machine's GPUs. Raises ValueError only for a `WISP_GPU_INVENTORY` that cannot be read."""
    path = environ.get(INVENTORY_ENV)
    if path:
        return _from_file(path)
    return _from_nvml() or _from_nvidia_smi() or Inventory()


__all__ = ["INVENTORY_ENV", "QUERY", "discover", "parse_csv"]
