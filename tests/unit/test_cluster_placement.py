"""Placement on a cluster (issue 14), pure: which node takes the next container, or why none."""
from __future__ import annotations

import pytest

from wisp._gpu import parse
from wisp.server.runtime.cluster.placement import (
    DEFAULT_CPU,
    DEFAULT_MEMORY_MB,
    NOTHING,
    Need,
    NodeView,
    need_of,
    place,
)
from wisp.server.runtime.cluster.runtime import gpu_model, totals

ONE_CPU = Need(1.0, 4096, 0)


def node(name: str, *, reserved: Need = NOTHING, replicas: int = 0, draining: bool = False,
         lost: bool = False, total: Need = ONE_CPU) -> NodeView:
    return NodeView(name, total, reserved, replicas, draining, lost)


@pytest.mark.parametrize(("cpu", "memory", "gpu", "need"), [
    (None, None, None, Need(DEFAULT_CPU, DEFAULT_MEMORY_MB, 0)),
    (2.0, 1024, None, Need(2.0, 1024, 0)),
    (None, None, "A10G", Need(DEFAULT_CPU, DEFAULT_MEMORY_MB, 1)),
    (None, None, "H100:4", Need(DEFAULT_CPU, DEFAULT_MEMORY_MB, 4)),
    (None, None, "any", Need(DEFAULT_CPU, DEFAULT_MEMORY_MB, 1)),
    (0.5, 64, "T4:x", Need(0.5, 64, 1)),  # stored before the SDK checked gpu=
    (None, None, ("H100:2", "A100"), Need(DEFAULT_CPU, DEFAULT_MEMORY_MB, 2)),  # fallbacks: the first's count
])
def test_a_function_reserves_its_decorators_resources(cpu: float | None, memory: int | None,
                                                      gpu: str | tuple[str, ...] | None,
                                                      need: Need) -> None:
    assert need_of(cpu, memory, gpu) == need


@pytest.mark.parametrize(("nodes", "need", "chosen"), [
    # the fewest replicas of the function first: replicas spread
    ([node("a", replicas=1), node("b")], Need(0.5, 128, 0), "b"),
    ([node("a"), node("b", replicas=1)], Need(0.5, 128, 0), "a"),
    # then the least reserved share of CPU
    ([node("a", reserved=Need(0.5, 0, 0)), node("b", reserved=Need(0.25, 0, 0))], Need(0.25, 128, 0), "b"),
    # then the name, so the choice is stable
    ([node("b"), node("a")], Need(0.5, 128, 0), "a"),
    # a node without room is passed over, however few replicas it has
    ([node("a", reserved=Need(0.75, 0, 0)), node("b", replicas=3, reserved=Need(0.25, 0, 0))], Need(0.5, 128, 0), "b"),
    # exactly full still fits
    ([node("a", reserved=Need(0.5, 0, 0))], Need(0.5, 128, 0), "a"),
    # draining and lost nodes take nothing
    ([node("a", draining=True), node("b", replicas=5)], Need(0.1, 1, 0), "b"),
    ([node("a", lost=True), node("b", replicas=5)], Need(0.1, 1, 0), "b"),
    # memory and GPUs count too
    ([node("a", reserved=Need(0, 4000, 0)), node("b", replicas=1)], Need(0.1, 200, 0), "b"),
    ([node("a"), node("b", replicas=1, total=Need(8, 4096, 2))], Need(0.1, 1, 1), "b"),
])
def test_placement_spreads_then_balances(nodes: list[NodeView], need: Need, chosen: str) -> None:
    assert place(nodes, need).node == chosen


@pytest.mark.parametrize(("nodes", "need", "never", "says"), [
    ([], Need(), False, "no node is up"),
    ([node("a", lost=True)], Need(), False, "no node is up"),
    ([node("a", draining=True)], Need(), False, "every node is draining"),
    ([node("a", reserved=Need(1.0, 0, 0))], Need(0.5, 1, 0), False, "is full"),
    ([node("a"), node("b", total=Need(2, 8192, 0))], Need(4.0, 128, 0), True, "more than any node has"),
    ([node("a")], Need(0.5, 128, 1), True, "1 GPU"),
    ([node("a")], Need(0.5, 10_000, 0), True, "lower the function's cpu=/memory=/gpu="),
])
def test_no_room_says_why_and_whether_waiting_helps(nodes: list[NodeView], need: Need, never: bool, says: str) -> None:
    decision = place(nodes, need)
    assert decision.node is None and decision.never is never
    assert says in decision.reason


def test_a_node_s_totals_come_from_ray_s_resources() -> None:
    assert totals({"CPU": 4.0, "memory": 8 * 2**30, "GPU": 2.0, "object_store_memory": 1e9}) == Need(4.0, 8192, 2)
    assert totals({}) == Need(0.0, 0, 0)


GPU_NODE = Need(8, 8192, 2)


@pytest.mark.parametrize(("models", "gpu", "chosen"), [
    ({"a": "T4", "b": "A100-80G"}, "A100", "b"),  # only a node with the model
    ({"a": "T4", "b": "A100-80G"}, "A100-80GB", "b"),  # Ray's "80G" is wisp's "80GB"
    ({"a": "T4", "b": "A100-40G"}, "A100-80GB", None),
    ({"a": "T4", "b": "H200"}, "H100", "b"),  # a stand-in, as on one machine
    ({"a": "T4", "b": "H200"}, "H100!", None),
    ({"a": "T4", "b": "L4"}, ["H100", "L4"], "b"),
    ({"a": "T4", "b": ""}, "A100", "b"),  # Ray did not say which model: by count only
    ({"a": "T4", "b": "L4"}, "any", "a"),
    ({"a": "", "b": "T4"}, "T4", "b"),  # "a" has no GPU at all
])
def test_a_gpu_function_goes_to_a_node_with_its_model(models: dict[str, str], gpu: object, chosen: str | None) -> None:
    nodes = [NodeView(name, GPU_NODE if model or name == "b" else ONE_CPU, gpu_model=model)
             for name, model in models.items()]
    decision = place(nodes, Need(0.1, 1, 1), parse(gpu))
    assert decision.node == chosen
    if chosen is None:
        assert decision.never and "the nodes' GPUs are" in decision.reason


def test_no_node_with_a_gpu_says_so() -> None:
    decision = place([node("a"), node("b")], Need(0.1, 1, 1), parse("T4"))
    assert decision.never and "the nodes' GPUs are none" in decision.reason


def test_a_node_s_gpu_model_comes_from_ray_s_resources() -> None:
    assert gpu_model({"GPU": 2.0, "accelerator_type:A100-80G": 1.0}) == "A100-80G"
    assert gpu_model({"CPU": 4.0}) == ""
