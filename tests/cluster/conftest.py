"""The cluster tier (issue 14): a real multi-node Ray cluster on 127.0.0.1, started once per module
(`ray.cluster_utils.Cluster`: a head and worker nodes of 1 CPU each, small object stores, no
dashboard), and a wisp server on it with `--runtime ray`. Every node binds to 127.0.0.1
(node_ip_address, and RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps it there); traffic stays on loopback."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e2e.conftest import _STARTED, Wisp, free_port, open_for_containers, remove_open_homes  # noqa: F401  (a fixture)

NODE = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 80 * 1024 * 1024}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.e2e)


@dataclass
class RayCluster:
    cluster: Any  # ray.cluster_utils.Cluster
    wisp: Wisp
    root: Path

    def add_node(self) -> Any:
        return self.cluster.add_node(**NODE)

    def kill(self, node: Any) -> None:
        """The node's raylet and everything Ray started there, killed (no graceful exit)."""
        self.cluster.remove_node(node, allow_graceful=False)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """Two nodes and a wisp server on them, for one module."""
    # Short and outside pytest's 0700 folders: Ray's socket paths are long, and app uids must pass.
    root = Path(tempfile.mkdtemp(prefix="wisp-ray-"))
    os.chmod(root, 0o711)
    saved = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "WISP_NODE_HOME")}
    os.environ.update(RAY_TMPDIR=str(root / "ray"), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
                      WISP_NODE_HOME=str(root / "nodes"))
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    try:
        cluster.add_node(**NODE)
        home = tmp_path_factory.mktemp("ray-home") / "home"
        open_for_containers(home)
        wisp = Wisp(home, free_port())
        wisp.run("server", "start", "--runtime", "ray", "--ray-address", cluster.address)
        _STARTED.append((home, "tests/cluster"))
        try:
            yield RayCluster(cluster, wisp, root)
        finally:
            wisp.run("server", "stop", check=False)
    finally:
        cluster.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(root, ignore_errors=True)
