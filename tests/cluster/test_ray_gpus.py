"""GPU models on a real Ray cluster (issue 15, point 4): a node that declares one T4 (Ray's
`num_gpus` and `accelerator_type:T4` resources, and a fake inventory at its discovery boundary,
WISP_GPU_INVENTORY; no GPU is used) takes the gpu="T4" function's containers, which get its
device, and a function asking for a model no node has gets a 503 naming what the nodes have."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import requests

from e2e.conftest import admin, wait_until

from .conftest import NODE, RayCluster

APPS = Path(__file__).parent / "apps"
UUID = "GPU-33333333-cccc"


def nodes(cluster: RayCluster) -> list[dict[str, Any]]:
    return json.loads(admin(cluster.wisp, "/v1/nodes")[1])["nodes"]  # type: ignore[no-any-return]  # JSON


def test_a_gpu_function_goes_to_the_node_with_its_model(ray_cluster: RayCluster, tmp_path: Path) -> None:
    inventory = ray_cluster.root / "t4.csv"
    inventory.write_text(f"0, Tesla T4, {UUID}, 15360 MiB\n")
    os.environ["WISP_GPU_INVENTORY"] = str(inventory)  # the node's processes inherit it: its agent's discovery
    try:
        ray_cluster.cluster.add_node(**NODE, num_gpus=1, resources={"accelerator_type:T4": 1.0})
    finally:
        del os.environ["WISP_GPU_INVENTORY"]
    wait_until(lambda: any(n["gpus"] == "T4" for n in nodes(ray_cluster)), timeout=120, message="the T4 node")
    (gpu_node,) = [n["name"] for n in nodes(ray_cluster) if n["gpus"] == "T4"]
    shutil.copy(APPS / "gpu_models.py", tmp_path / "gpu_models.py")
    ray_cluster.wisp.run("deploy", str(tmp_path / "gpu_models.py"))
    answer = requests.get(ray_cluster.wisp.url("gpu-models--t4"), timeout=120)
    assert answer.status_code == 200 and answer.json() == {"node": gpu_node, "cuda": UUID}, answer.text
    refused = requests.get(ray_cluster.wisp.url("gpu-models--a100"), timeout=60)
    assert refused.status_code == 503, refused.text
    assert "it asks for A100, and the nodes' GPUs are" in refused.text and "T4" in refused.text, refused.text
