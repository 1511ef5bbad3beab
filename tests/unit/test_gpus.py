"""GPUs (issue 15, point 4): the gpu= grammar, how names match devices, which free devices a
container gets, what a machine without the GPU answers, and reading nvidia-smi's inventory."""
from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import pytest

from wisp._gpu import GpuOption, canonical, parse
from wisp._protocol import Start
from wisp.server.runtime import NoCapacity
from wisp.server.runtime.capacity import Capacity
from wisp.server.runtime.cluster.placement import Need
from wisp.server.runtime.gpu_discovery import _minor, discover, parse_csv
from wisp.server.runtime.gpus import Gpu, Grant, Inventory, choose, rank, unplaceable

T4 = "Tesla T4"
A100_40 = Gpu(0, "NVIDIA A100-SXM4-40GB", "GPU-a40", 40960)
A100_80 = Gpu(1, "NVIDIA A100 80GB PCIe", "GPU-a80", 81920)
H100 = Gpu(2, "NVIDIA H100 80GB HBM3", "GPU-h100", 81559)
H200 = Gpu(3, "NVIDIA H200", "GPU-h200", 143771)
A10G = Gpu(4, "NVIDIA A10G", "GPU-a10g", 23028)
RTX = Gpu(5, "NVIDIA RTX PRO 6000 Blackwell Server Edition", "GPU-rtx", 97887)
GEFORCE = Gpu(6, "NVIDIA GeForce RTX 4090", "GPU-4090", 24564)
B300 = Gpu(7, "NVIDIA B300", "GPU-b300", 275040)


def t4s(n: int) -> tuple[Gpu, ...]:
    return tuple(Gpu(i, T4, f"GPU-t4-{i}", 15360) for i in range(n))


@pytest.mark.parametrize(("value", "options"), [
    (None, ()),
    ("T4", (GpuOption("T4"),)),
    ("t4", (GpuOption("T4"),)),
    ("A100:2", (GpuOption("A100", 2),)),
    ("a100-80gb:4", (GpuOption("A100-80GB", 4),)),
    ("H100!", (GpuOption("H100", exact=True),)),
    ("h100!:8", (GpuOption("H100", 8, exact=True),)),
    ("B200+", (GpuOption("B200", newer=True),)),
    ("any", (GpuOption("ANY"),)),
    (" L40S ", (GpuOption("L40S"),)),
    (["H100", "A100:2"], (GpuOption("H100"), GpuOption("A100", 2))),
    (("rtx-pro-6000",), (GpuOption("RTX-PRO-6000"),)),
])
def test_gpu_values_parse_as_modal_spells_them(value: object, options: tuple[GpuOption, ...]) -> None:
    assert parse(value) == options


@pytest.mark.parametrize(("value", "stored"), [
    (None, None),
    ("a100-80gb:1", "A100-80GB"),
    ("h100!:2", "H100!:2"),
    (["h100", "a100"], ("H100", "A100")),
])
def test_the_stored_value_is_canonical(value: object, stored: object) -> None:
    assert canonical(value) == stored


@pytest.mark.parametrize(("value", "error"), [
    ("T4:0", "count in 'T4:0' must be a whole number from 1 to 64"),
    ("T4:x", "count in 'T4:x'"),
    ("A100:65", "from 1 to 64"),
    ("", "is not a GPU model"),
    ("T 4", "is not a GPU model"),
    ([], "gpu= takes a model name"),
    (["T4", 2], "gpu= takes a model name"),
    (True, "gpu= takes a model name"),
])
def test_a_bad_gpu_value_says_what_to_write(value: object, error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("(", r"\(")):
        parse(value)


@pytest.mark.parametrize(("option", "gpu", "expected"), [
    ("T4", Gpu(0, T4), 0),
    ("T4", Gpu(0, "NVIDIA T4G"), None),  # a word, not a prefix
    ("ANY", GEFORCE, 0),
    ("A100", A100_40, 0),
    ("A100", A100_80, 0),  # any A100, as on Modal
    ("A100-40GB", A100_40, 0),
    ("A100-40GB", A100_80, None),
    ("A100-80GB", A100_80, 0),
    ("A100-80GB", Gpu(0, "NVIDIA A100-SXM4-80GB", memory_mb=81920), 0),
    ("A10", A10G, 0),  # one part, two names
    ("A10G", Gpu(0, "NVIDIA A10", memory_mb=23028), 0),
    ("A10", A100_40, None),
    ("H100", H100, 0),
    ("H100", H200, 1),  # a stand-in, after the H100s
    ("H100!", H200, None),  # never a stand-in
    ("H200", H100, None),
    ("B200", B300, None),
    ("B200+", B300, 1),
    ("L40S", Gpu(0, "NVIDIA L40S"), 0),
    ("L40S", Gpu(0, "NVIDIA L40"), None),
    ("RTX-PRO-6000", RTX, 0),
    ("RTX-4090", GEFORCE, 0),  # a model Modal does not sell: the words of the device's name
])
def test_how_a_model_name_matches_a_device(option: str, gpu: Gpu, expected: int | None) -> None:
    assert rank(parse(option)[0], gpu) == expected


@pytest.mark.parametrize(("value", "inventory", "held", "devices", "outcome"), [
    # one T4 each, the lowest free index first
    ("T4", t4s(2), (), (0,), "now"),
    ("T4", t4s(2), (0,), (1,), "now"),
    ("T4", t4s(2), (0, 1), (), "wait"),
    ("T4:2", t4s(2), (), (0, 1), "now"),
    ("T4:2", t4s(2), (1,), (), "wait"),
    ("T4:3", t4s(2), (), (), "never"),
    ("A100", t4s(2), (), (), "never"),
    ("any", (), (), (), "never"),
    ("any", t4s(1), (), (0,), "now"),
    # fallbacks in order: the first that free devices meet now
    (["H100", "T4"], (H100, *t4s(2)), (), (2,), "now"),
    (["H100", "T4"], (H100, *t4s(2)), (2,), (0,), "now"),
    (["H100", "T4"], (H100, *t4s(2)), (0, 1, 2), (), "wait"),
    (["A100", "T4"], t4s(2), (), (0,), "now"),
    # the model itself before a stand-in; "!" never takes one
    ("H100", (H200, H100), (), (2,), "now"),
    ("H100", (H200, H100), (2,), (3,), "now"),
    ("H100!", (H200, H100), (2,), (), "wait"),
    ("H100!", (H200,), (), (), "never"),
    # all of one model: two T4s and an L4 make no "any:3"
    ("any:2", (Gpu(0, T4), Gpu(1, "NVIDIA L4"), Gpu(2, T4)), (), (0, 2), "now"),
    ("any:3", (Gpu(0, T4), Gpu(1, "NVIDIA L4"), Gpu(2, T4)), (), (), "never"),
])
def test_which_free_devices_a_container_gets(value: object, inventory: tuple[Gpu, ...], held: tuple[int, ...],
                                             devices: tuple[int, ...], outcome: str) -> None:
    choice = choose(parse(value), inventory, held)
    assert tuple(d.index for d in choice.devices) == devices
    assert ("never" if choice.never else "now" if choice.devices else "wait") == outcome


def test_a_machine_without_the_gpu_says_what_was_asked_and_what_it_has() -> None:
    two_t4 = Inventory(t4s(2), "nvidia-smi")
    assert unplaceable("T4", two_t4) is None
    assert unplaceable(None, Inventory()) is None
    message = unplaceable("A100", two_t4)
    assert message is not None
    assert "gpu='A100'" in message and "2 x Tesla T4 (index 0, 1)" in message and "gpu='any'" in message
    fallbacks = unplaceable(("H100", "A100"), two_t4)
    assert fallbacks is not None and "gpu=['H100', 'A100']" in fallbacks
    none = unplaceable("any", Inventory())
    assert none is not None and "no GPU (no NVIDIA driver found" in none
    broken = unplaceable("T4:x", two_t4)  # stored before the SDK checked gpu=
    assert broken is not None and "cannot be read" in broken


def test_a_grant_is_the_containers_environment_and_device_nodes() -> None:
    grant = Grant((Gpu(1, T4, "GPU-b", minor=3), Gpu(2, T4)))
    assert grant.env() == {"CUDA_VISIBLE_DEVICES": "GPU-b,2", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert grant.device_nodes() == ("/dev/nvidia3", "/dev/nvidia2")
    assert Grant().env()["CUDA_VISIBLE_DEVICES"] == ""  # no gpu=: no GPU visible


def test_the_container_request_carries_its_device_nodes() -> None:
    start = Start("/root", "app", "stub", "f").for_container("/s.sock", ("/dev/nvidia1",))
    again = Start.from_arg(start.to_arg())
    assert again == start and again.gpu_devices == ("/dev/nvidia1",)
    assert Start.from_arg(Start("/root", "app", "stub", "f").to_arg()).gpu_devices == ()


def test_capacity_holds_devices_until_given_back() -> None:
    capacity = Capacity(4.0, 4096, gpus=Inventory((*t4s(2), Gpu(2, "NVIDIA L4"))))
    asked: list[tuple[object, list[object]]] = []

    def reclaim(asking: object, holders: Collection[object]) -> bool:
        asked.append((asking, list(holders)))
        return False

    capacity.reclaim_gpu = reclaim
    t4 = parse("T4")
    first, second = capacity.take(Need(), t4, "a"), capacity.take(Need(), t4, "b")
    capacity.take(Need(), parse("L4"), "c")
    assert {d.index for d in (*first.devices, *second.devices)} == {0, 1}
    with pytest.raises(NoCapacity, match="held by another container") as waiting:
        capacity.take(Need(), t4)
    assert capacity.containers == 3  # the refused start reserved nothing
    assert waiting.value.make_room is not None and not waiting.value.make_room("me")
    assert asked == [("me", ["a", "b"])]  # only the holders of T4s are asked for an idle container
    capacity.give_back(Need(), first)
    assert capacity.take(Need(), t4).devices == first.devices
    with pytest.raises(RuntimeError, match="asks for A100 and has 2 x Tesla T4"):
        capacity.take(Need(), parse("A100"))
    assert capacity.take(Need()).devices == ()  # no gpu=: no device, never waits for one


@pytest.mark.parametrize(("text", "devices"), [
    ("", ()),
    ("0, Tesla T4, GPU-1, 15360 MiB\n1, Tesla T4, GPU-2, 15360 MiB\n",
     (Gpu(0, T4, "GPU-1", 15360), Gpu(1, T4, "GPU-2", 15360))),
    ("# a fake machine\n\n3, NVIDIA A100-SXM4-80GB, GPU-x, 81920\n", (Gpu(3, "NVIDIA A100-SXM4-80GB", "GPU-x", 81920),)),
])
def test_nvidia_smi_csv_is_read(text: str, devices: tuple[Gpu, ...]) -> None:
    assert parse_csv(text) == devices


@pytest.mark.parametrize("line", ["Tesla T4", "x, Tesla T4, GPU-1, 15360", "0, Tesla T4, GPU-1, lots"])
def test_a_bad_inventory_line_is_named(line: str) -> None:
    with pytest.raises(ValueError, match="line 1 .* is not 'index, name, uuid, memory.total"):
        parse_csv(line)


def test_the_minor_number_comes_from_the_driver_s_proc_files(tmp_path: Path) -> None:
    folder = tmp_path / "0000:00:1e.0"
    folder.mkdir()
    (folder / "information").write_text("Model: \t\t Tesla T4\nIRQ:   36\nDevice Minor: \t 5\n")
    assert _minor("00000000:00:1E.0", tmp_path) == 5
    assert _minor("00000000:00:1F.0", tmp_path) is None


def test_the_inventory_file_overrides_the_driver(tmp_path: Path) -> None:
    fake = tmp_path / "gpus.csv"
    fake.write_text("0, Tesla T4, GPU-1, 15360 MiB\n")
    inventory = discover({"WISP_GPU_INVENTORY": str(fake)})
    assert inventory.devices == (Gpu(0, T4, "GPU-1", 15360),) and "WISP_GPU_INVENTORY" in inventory.source
    fake.write_text("")
    assert discover({"WISP_GPU_INVENTORY": str(fake)}).devices == ()
    with pytest.raises(ValueError, match="WISP_GPU_INVENTORY=.*missing.csv"):
        discover({"WISP_GPU_INVENTORY": str(tmp_path / "missing.csv")})
