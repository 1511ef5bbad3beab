"""Serializable specs: what decorators record and what the server runs.

Plain dataclasses with to_dict/from_dict, so the CLI can send an app to the control plane as
JSON and the server can store it in SQLite and hand it to containers.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from ._gpu import GpuValue
from ._image_steps import ImageSpec
from ._network import NetworkValue

WebKind = Literal["webhook", "asgi", "wsgi", "web_server"]
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class WebSpec:
    kind: WebKind
    method: str = "GET"  # webhooks only
    label: str | None = None
    docs: bool = False  # webhooks only: serve FastAPI's /docs and /openapi.json
    port: int | None = None  # web_server only: the port the user's server listens on
    startup_timeout: float = 5.0  # web_server only: seconds for that port to accept connections
    requires_proxy_auth: bool = False  # the gateway admits requests with a proxy token's Modal-Key/-Secret only


@dataclass(frozen=True)
class SecretRef:
    """One entry of `secrets=[...]`: a named secret (resolved by the server at deploy time) or
    inline values (from_dict/from_dotenv). The server strips `env` before storing the spec."""
    name: str | None = None
    env: dict[str, str] | None = field(default=None, repr=False)  # never in a repr or log
    keys: tuple[str, ...] = ()  # inline secrets: the key names, kept when `env` is stripped
    required_keys: tuple[str, ...] = ()

    @classmethod
    def from_data(cls, data: Any) -> SecretRef:
        if isinstance(data, str):  # specs saved before secrets carried values: a name
            return cls(name=data)
        return cls(name=data.get("name"), env=data.get("env"), keys=tuple(data.get("keys", ())),
                   required_keys=tuple(data.get("required_keys", ())))

    def stripped(self) -> SecretRef:
        return dataclasses.replace(self, env=None)


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    image: ImageSpec
    web: WebSpec | None = None
    timeout: int = 300
    container_idle_timeout: int = 60
    keep_warm: int = 0
    concurrency_limit: int | None = None  # at most this many containers at once
    allow_concurrent_inputs: int = 1  # requests one container takes at once (max_inputs)
    target_inputs: int | None = None  # in-flight per container the autoscaler aims for
    buffer_containers: int = 0  # extra idle containers kept while the function is busy
    startup_timeout: int = 300  # seconds a container may take to become ready (enter included)
    fork: bool = True  # False: every container a fresh interpreter, never forked from a zygote
    # Reservations (placement, capacity.py) and the floors of the limits (server/runtime/limits.py).
    cpu: float | None = None  # cores
    memory: int | None = None  # MiB
    gpu: GpuValue = None  # canonical `gpu=` (wisp._gpu): "T4", "A100:2", or fallbacks ("H100", "A100")
    cpu_limit: float | None = None  # a CFS quota in cores: `cpu=(request, limit)`
    memory_limit: int | None = None  # a hard limit in MiB: `memory=(request, limit)`
    ephemeral_disk: int | None = None  # MiB of /tmp
    # Egress of a sandboxed container (wisp._network): False (loopback only), True, or an allow-list.
    network: NetworkValue = False
    retries: dict[str, Any] | None = None  # wisp._retries.policy(): max_retries, backoff, delays
    secrets: tuple[SecretRef, ...] = ()
    # A method of a class (S12): the container makes one instance of `cls` (the class's dotted
    # path in the module), runs its enter hooks, then serves the bound method `method_name`.
    cls: str | None = None
    method_name: str | None = None
    # Deployed by Modal's client: its containers run Modal's own entrypoint with the
    # ContainerArguments in this file of the version's folder (wisp.server.modal_api.launcher).
    modal_args: str | None = None

    def to_dict(self) -> dict[str, Any]:
        plain = dataclasses.asdict(dataclasses.replace(self, image=ImageSpec()))  # steps are not plain dataclasses
        return {**plain, "image": self.image.to_data()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FunctionSpec:
        web = data.get("web")
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["image"] = ImageSpec.from_data(values["image"])
        values["web"] = WebSpec(**web) if web else None
        values["secrets"] = tuple(SecretRef.from_data(s) for s in values.get("secrets", ()))
        if isinstance(values.get("gpu"), list):  # fallbacks: a list in JSON
            values["gpu"] = tuple(values["gpu"])
        if isinstance(values.get("network"), list):  # an allow-list: a list in JSON
            values["network"] = tuple(values["network"])
        return cls(**values)


@dataclass(frozen=True)
class AppSpec:
    name: str
    module: str  # the user's script, imported by this module name inside containers
    stub_attr: str  # the module-level name of the Stub
    functions: tuple[FunctionSpec, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "stub_attr": self.stub_attr,
            "functions": [f.to_dict() for f in self.functions],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AppSpec:
        return cls(
            name=data["name"],
            module=data["module"],
            stub_attr=data["stub_attr"],
            functions=tuple(FunctionSpec.from_dict(f) for f in data["functions"]),
        )

    def without_secret_values(self) -> AppSpec:
        """The spec to store and show: inline secrets keep their key names, not their values."""
        functions = tuple(dataclasses.replace(f, secrets=tuple(r.stripped() for r in f.secrets)) for f in self.functions)
        return dataclasses.replace(self, functions=functions)

    def function(self, name: str) -> FunctionSpec:
        for fn in self.functions:
            if fn.name == name:
                return fn
        raise KeyError(name)
