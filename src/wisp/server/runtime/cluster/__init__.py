"""Containers on many machines: the Ray runtime (`runtime.ClusterRuntime`), its host agents
(`agent.HostAgent`, one Ray actor per node) and the pure placement policy (`placement`).
Ray is imported only when a server starts this runtime (`pip install wisp[ray]`)."""
