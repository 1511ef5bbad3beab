"""Apps and their versions: build images, unpack code, swap routes, drain what was replaced."""
from __future__ import annotations

import asyncio
import functools
import hmac
import io
import os
import secrets
import shutil
import tarfile
import time
import urllib.parse
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._gpu import parse as parse_gpu
from .._image import MOUNT_BLOBS
from .._image_steps import ImageSpec
from .._network import canonical as canonical_network
from .._protocol import Start
from .._spec import AppSpec, FunctionSpec
from .._urls import app_id_for, call_label, endpoint_urls, make_label
from .auth import (
    DeployTokens,
    Principal,
    ProxyTokens,
    call_token_check,
    digest,
    new_deploy_token,
    new_proxy_token,
)
from .bundles import BundleLimits, BundleRefused, check_bundle, extract_bundle
from .call_sockets import CallSockets
from .dashboard.history import History, summarize
from .gateway import Admit, Target
from .images import ImageBuildError, LocalImageBuilder, Progress, build_key
from .isolation import AppUser, allocate_uid, app_user, base_env, own_tree
from .logs import AppLog
from .metrics import Gauge, Labels, Metrics
from .pool import FunctionPool, PoolConfig
from .runtime import NotReady, Runtime, gpus
from .runtime.base import Launcher
from .runtime.capacity import Capacity, CappedLauncher, machine_memory_mb
from .runtime.cluster.placement import need_of
from .runtime.cluster.runtime import ClusterRuntime
from .runtime.egress import network_notice, with_network
from .runtime.limits import limits_for, machine_cores
from .runtime.placement import check_local_runtime, container_settings, local_path, place_files
from .runtime.slots import Slots, unavailable
from .runtime.zygote import ZygoteRuntime
from .spawned import SpawnedCalls
from .store import AppRow, Store, StoreError, VersionRow
from .uid_claims import UidClaims, claim_held

HEARTBEAT_TIMEOUT = 10.0  # an ephemeral app whose `wisp serve` went silent this long is stopped
PROVE_SLACK = 15.0  # seconds past startup_timeout a deploy waits for a container to say it is ready or failed
KEEP_VERSIONS = 10  # versions kept per app (WISP_KEEP_VERSIONS), the current one included


class DeployError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class RunningApp:
    id: str
    name: str
    mode: str
    version: int
    spec: AppSpec
    pools: dict[str, FunctionPool]  # label -> pool
    owner: str | None = None
    heartbeat: float = field(default_factory=time.monotonic)

    def pool_for(self, function: str) -> FunctionPool | None:
        """The pool of a called function (`.remote()`, `.spawn()`) of this version."""
        return self.pools.get(call_label(self.id, function))


@dataclass(frozen=True)
class ManagerConfig:
    """What an AppManager knows of its server, fixed for the server's life."""

    home: Path  # WISP_HOME: the apps' code, logs, images and state
    gateway_port: int  # for the URLs it reports
    socket_dir: str  # where containers listen (short: Unix socket paths max out at 107 bytes)
    pools: PoolConfig = PoolConfig()  # the activator's queue bounds, the same for every function
    uid_range: tuple[int, int] | None = None  # (base, count) of per-app uids on a root server; None: the server's
    bundles: BundleLimits = BundleLimits()  # how large a deploy's files may be, compressed and unpacked
    uid_claims: UidClaims | None = None  # the uids other stores on this machine hold (uid_claims.py); None: not known


class AppManager:
    def __init__(self, config: ManagerConfig, store: Store, builder: LocalImageBuilder, runtime: Runtime,
                 routes: dict[str, Target], metrics: Metrics | None = None, slots: Slots | None = None) -> None:
        """`routes`: the gateway's label -> Target table, which deploys swap; the collaborators are live
        objects, the config plain values. `slots`: the cgroups that enforce containers' limits
        (`Slots.start()`; None: none)."""
        self.home = config.home
        self.uid_range = config.uid_range
        self.uid_claims = config.uid_claims
        self.bundle_limits = config.bundles
        self._users: dict[str, AppUser] = {}
        self.store = store
        self.builder = builder
        self.runtime = runtime
        # What running containers reserve of this machine (the local runtimes; a cluster counts per node).
        self.capacity = Capacity.of_this_machine()
        self.capacity.reclaim = self._reclaim
        self.capacity.reclaim_gpu = self._reclaim
        self.slots = slots or unavailable()
        self.routes = routes
        self.gateway_port = config.gateway_port
        self.socket_dir = config.socket_dir
        self.config = config.pools
        self.metrics = metrics or Metrics()
        self.metrics.gauges += [
            Gauge("wisp_containers", "Containers by app, function and state.", self._container_gauge),
            Gauge("wisp_queued_requests", "Requests waiting for a container slot.", lambda: self._pool_gauge("queued")),
            Gauge("wisp_in_flight_requests", "Requests being served.", lambda: self._pool_gauge("in_flight")),
        ]
        self.apps: dict[str, RunningApp] = {}
        self.history = History()  # the dashboard's charts: a point a second per function, 15 min
        self._awake: dict[FunctionPool, str] = {}  # the pools the tick looks at, and their app's id
        self.logs: dict[str, AppLog] = {}
        self._draining: set[asyncio.Task[None]] = set()
        self._retiring: dict[FunctionPool, str] = {}  # draining or stopping -> app id: their images stay
        self._deploying: list[tuple[str, AppSpec]] = []
        self._locks: dict[str, asyncio.Lock] = {}  # per app id; held only while no user code runs
        self._reserved: dict[str, int] = {}  # app id -> the highest version number handed out
        self.control_url = ""  # set once the control API listens; containers spawn calls there
        # Modal's client API (modal_api.ModalService), once it runs: Modal containers call through it.
        self.modal_service: Any = None
        self.call_sockets = CallSockets(config.gateway_port)  # sandboxed containers call through these
        self.calls = SpawnedCalls(store, self._call_pool, lambda app_id, line: self.log(app_id).write(line))
        self._call_tokens: dict[str, str] = {}  # app id -> its call token (kept in SQLite too)
        self.failed: dict[str, str] = {}  # app id -> why restore() could not bring it back
        self.keep_versions = keep_versions_from_env()
        self._draining_versions: dict[FunctionPool, tuple[str, int]] = {}  # draining -> (app id, version): not pruned
        self._prune_pending: set[str] = set()  # apps whose drained versions tick() may prune now
        # Following the servers that share the store: the newest version of each deployed app this
        # server restored or followed (or tried to: not again each tick), and what is under way.
        self._tried: dict[str, int] = {}
        self._following: dict[str, asyncio.Task[None]] = {}
        self.proxy_tokens = ProxyTokens((row.key, row.secret_sha256) for row in store.proxy_tokens())
        self.deploy_tokens = DeployTokens((row.name, row.app_name, row.token_sha256) for row in store.deploy_tokens())

    @property
    def deploying(self) -> bool:
        return bool(self._deploying)

    def _call_pool(self, app_id: str, function: str) -> FunctionPool | None:
        app = self.apps.get(app_id)
        return None if app is None else app.pool_for(function)

    def call_token(self, app_id: str) -> str:
        """What an app's containers (and the `wisp run` that started it) show to call its functions."""
        token = self._call_tokens.get(app_id)
        if token is None:
            token = self._call_tokens[app_id] = self.store.call_token(app_id, lambda: secrets.token_urlsafe(32))
        return token

    def app_for_call_token(self, token: str) -> str | None:
        for app in self.apps.values():
            if secrets_equal(token, self.call_token(app.id)):
                return app.id
        return None

    # -- proxy tokens ------------------------------------------------------------------------
    def create_proxy_token(self, name: str) -> dict[str, str] | None:
        """A new token's key and secret (the only time the secret is seen); None if the name is taken."""
        key, secret = new_proxy_token()
        if not self.store.add_proxy_token(name, key, digest(secret)):
            return None
        self.proxy_tokens.add(key, digest(secret))
        return {"name": name, "key": key, "secret": secret}

    def revoke_proxy_token(self, name_or_key: str) -> str | None:
        """The revoked token's name; it is refused from the next request on."""
        row = self.store.remove_proxy_token(name_or_key)
        if row is None:
            return None
        self.proxy_tokens.remove(row.key)
        return row.name

    # -- deploy tokens and who a control request comes from (issue 11) ---------------------------
    def create_deploy_token(self, app_name: str) -> dict[str, str]:
        """A new deploy token of `app_name` (its value is seen this once; the store keeps its SHA-256)."""
        taken = {row.name for row in self.store.proxy_tokens()} | {row.name for row in self.store.deploy_tokens()}
        name = next(n for n in (f"deploy-{app_name}", *(f"deploy-{app_name}-{i}" for i in range(2, 10_000)))
                    if n not in taken)
        token = new_deploy_token()
        self.store.add_deploy_token(name, app_name, digest(token))
        self.deploy_tokens.add(name, app_name, digest(token))
        return {"name": name, "app": app_name, "token": token}

    def revoke_deploy_token(self, name: str) -> str | None:
        row = self.store.remove_deploy_token(name)
        if row is None:
            return None
        self.deploy_tokens.remove(row.token_sha256)
        return row.name

    def identify(self, token: str) -> Principal | None:
        """A deploy token's or a call token's principal; None for a token this server does not know."""
        found = self.deploy_tokens.find(token)
        if found is not None:
            return found
        app_id = self.app_for_call_token(token)
        return None if app_id is None else Principal("call", app_id)

    def app_name(self, app_id: str, who: Principal | None = None) -> str | None:
        """The name of app `app_id`; for an id this server has never run, the name a deploy token's
        own ids would carry (`name`, `name-dev`, `name-run-...`), else None."""
        running = self.apps.get(app_id)
        if running is not None:
            return running.name
        row = self.store.app(app_id)
        if row is not None:
            return row.name
        if who is not None and who.app and (app_id in (who.app, f"{who.app}-dev") or app_id.startswith(f"{who.app}-run-")):
            return who.app
        return None

    def user(self, app_id: str) -> AppUser | None:
        """The uid/gid the app's containers run as (allocated on its first deploy, kept in the store)."""
        if self.uid_range is None:
            return None
        if app_id not in self._users:
            base, count = self.uid_range
            claims = self.uid_claims

            def allocate(taken: list[int]) -> int:
                if claims is not None:
                    try:
                        return claims.pick(lambda skipped: allocate_uid(skipped, base, count), taken)
                    except OSError as exc:
                        print(f"wisp server: cannot read or write the app uids' claims in {claims.folder} "
                              f"({exc}): {app_id}'s uid is not checked against other servers'.", flush=True)
                return allocate_uid(taken, base, count)

            uid = self.store.app_uid(app_id, allocate)
            if claims is not None:  # kept in the store: another server of it may have picked it, or the claim be lost
                claim_held(claims, app_id, uid)
            self._users[app_id] = app_user(uid, self.socket_dir)
        return self._users[app_id]

    def log(self, app_id: str) -> AppLog:
        if app_id not in self.logs:
            self.logs[app_id] = AppLog(self.home / "logs" / f"{app_id}.log")
            os.chmod(self.logs[app_id].path, 0o600)  # the server's: no container reads any app's log
        return self.logs[app_id]

    # -- deploy ----------------------------------------------------------------------------
    async def deploy(self, spec_data: dict[str, Any], mode: str, files: bytes, owner: str | None,
                     progress: Progress | None = None) -> dict[str, Any]:
        sent = AppSpec.from_dict(spec_data)
        # Before anything changes: a missing secret fails the deploy with the command that creates it.
        secret_env = resolve_secrets(sent, self._secret_values)
        spec = sent.without_secret_values()  # inline values never reach the stored spec
        app_id = app_id_for(spec.name, mode, owner)
        labels = _labels(spec, mode, app_id)
        _check_network(spec)
        for f in labels.values():  # said in the deploy's output too (the app's logs get it from `_pool`)
            notice = network_notice(self.runtime, f.name, f.network)
            if notice is not None and progress is not None:
                progress({"event": "notice", "line": notice.removeprefix("[wisp] ")})
        self._check_labels(app_id, labels)
        images = [f.image for f in labels.values()]
        try:
            check_local_runtime(images)
            # Every member inside the folder, sizes within the limits: refused before anything is built.
            await asyncio.to_thread(check_bundle, files, self.bundle_limits)
        except ImageBuildError as exc:
            raise DeployError(400, str(exc)) from None
        except BundleRefused as exc:
            raise DeployError(exc.status, exc.message) from None
        self._deploying.append((app_id, spec))  # `wisp image prune` keeps its images from now on
        try:
            # Outside any lock: builds of different apps run in parallel; the builder shares equal ones.
            pythons = await self._build_images(app_id, list(labels.values()), progress)
            async with self._app_lock(app_id):  # a version number and its folder, nothing slower
                version = self._next_version(app_id)
                files_dir = self._unpack(app_id, version, files)
                try:
                    place_files(images, files_dir)
                except ImageBuildError as exc:
                    shutil.rmtree(files_dir, ignore_errors=True)
                    raise DeployError(400, str(exc)) from None
                new = RunningApp(app_id, spec.name, mode, version, spec,
                                 self._pools(app_id, spec, labels, pythons, files_dir, secret_env), owner)
            # No lock while the new version's code runs (imports, enter hooks): other deploys of this
            # app and of every other app go on meanwhile, and the old version serves throughout.
            await self._prove_or_fail(new, files_dir)
            async with self._app_lock(app_id):  # what changed while it started is checked again
                refusal = self._label_clash(app_id, labels) or self._superseded(new) or self._save(new, files, secret_env)
                if refusal is None:
                    await self._swap(new)
            if refusal is not None:
                await self._discard(new, files_dir)
                raise refusal
        finally:
            self._deploying.remove((app_id, spec))
        self.failed.pop(app_id, None)
        await self._prune_versions(app_id)
        web = [label for label, f in labels.items() if f.web is not None]
        self.log(app_id).write(f"[wisp] {mode} {spec.name} version {version}: {', '.join(web) or 'no web functions'}")
        # The caller (the CLI, with the server's token) gets the app's call token: `wisp run` calls with it.
        return {**self.describe(self.apps[app_id]), "call_token": self.call_token(app_id),
                "control_url": self.control_url, "call_url": f"http://127.0.0.1:{self.gateway_port}"}

    def _secret_values(self, name: str) -> dict[str, str] | None:
        row = self.store.secret(name)
        return None if row is None else row.values

    def _check_labels(self, app_id: str, labels: dict[str, FunctionSpec]) -> None:
        clash = self._label_clash(app_id, labels)
        if clash is not None:
            raise clash

    def _label_clash(self, app_id: str, labels: dict[str, FunctionSpec]) -> DeployError | None:
        for other in self.apps.values():
            if other.id == app_id:
                continue
            clash = {label for label, f in labels.items() if f.web is not None} & set(other.pools)
            if clash:
                return DeployError(409, f"URL label {sorted(clash)[0]!r} is already served by app {other.id!r}. "
                                        f"Give the function another `label=`, or stop that app with `wisp app stop {other.id}`.")
        return None

    def _superseded(self, new: RunningApp) -> DeployError | None:
        current = self.apps.get(new.id)
        if current is None or current.version < new.version:
            return None
        return DeployError(409, f"Version {current.version} of {new.name} was deployed while version {new.version} "
                                f"was starting; version {current.version} serves and version {new.version} was "
                                "discarded. Deploy again if that is not what you want.")

    def _save(self, new: RunningApp, files: bytes, secret_env: dict[str, dict[str, str]]) -> DeployError | None:
        """Record a proven version as the app's current one (a deployed app's files with it, so servers
        sharing the store can serve it too); a refusal when another server sharing the store saved
        this version number, or a later one, while it was starting."""
        row = self.store.app(new.id)
        try:
            if row is None or row.version < new.version:
                files_dir = str(self.home / "apps" / new.id / f"v{new.version}")
                self.store.save_version(new.id, new.name, new.mode, new.version, new.spec.to_dict(), files_dir,
                                        files if new.mode == "deploy" else None)
                self.store.save_version_secrets(new.id, new.version, secret_env)  # for restore(): values pinned
                return None
        except self.store.errors:  # the same number saved by another server a moment ago
            row = self.store.app(new.id)
        latest = row.version if row is not None else new.version
        return DeployError(409, f"Version {latest} of {new.name} was deployed through another server sharing the "
                                f"store while version {new.version} was starting here; version {new.version} was "
                                "discarded. Deploy again if that is not what you want.")

    def _app_lock(self, app_id: str) -> asyncio.Lock:
        return self._locks.setdefault(app_id, asyncio.Lock())

    def _next_version(self, app_id: str) -> int:
        """A number no other deploy of the app has: versions are saved only once they are ready."""
        version = max(self.store.next_version(app_id), self._reserved.get(app_id, 0) + 1)
        self._reserved[app_id] = version
        return version

    async def _build_images(self, app_id: str, functions: list[FunctionSpec],
                            progress: Progress | None = None) -> dict[str, Path]:
        log = self.log(app_id)
        by_key: dict[str, list[FunctionSpec]] = {}
        for f in functions:
            by_key.setdefault(build_key(f.image), []).append(f)
        groups = list(by_key.values())
        try:
            built = await asyncio.gather(*(self.builder.ensure(group[0].image, progress, ", ".join(f.name for f in group))
                                           for group in groups))
        except ImageBuildError as exc:
            log.write(f"[wisp] image build failed: {exc}")
            raise DeployError(400, str(exc)) from None
        return {f.name: python for group, python in zip(groups, built) for f in group}

    def _unpack(self, app_id: str, version: int, files: bytes) -> Path:
        target = self.home / "apps" / app_id / f"v{version}"
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        extract_bundle(files, target, self.bundle_limits, checked=True)  # checked when the deploy began
        return target

    def _pools(self, app_id: str, spec: AppSpec, labels: dict[str, FunctionSpec], pythons: dict[str, Path],
               files_dir: Path, secret_env: dict[str, dict[str, str]] | None = None) -> dict[str, FunctionPool]:
        log = self.log(app_id)
        user = self.user(app_id)
        if user is not None:  # the app's uid owns its code (0700): no other app reads it
            own_tree(files_dir, user)
        return {label: self._pool(app_id, spec, fn, pythons[fn.name], files_dir, log, (secret_env or {}).get(fn.name, {}),
                                  user) for label, fn in labels.items()}

    def _pool(self, app_id: str, spec: AppSpec, fn: FunctionSpec, python: Path, files_dir: Path, log: AppLog,
              secret_env: dict[str, str] | None = None, user: AppUser | None = None) -> FunctionPool:
        start = Start(directory=str(files_dir), module=spec.module, stub=spec.stub_attr, function=fn.name)
        image_env, cwd = container_settings(fn.image, python, files_dir)
        # Never the server's environment (WISP_HOME, WISP_TOKEN, ...): what the spec, the secrets and wisp give.
        wrap_network, network_env = with_network(self.runtime, fn.name, fn.network, log)
        env = {**base_env(files_dir, os.environ.get("LANG")), **image_env, **(secret_env or {}), "WISP_APP": app_id,
               "WISP_FUNCTION": fn.name, **self.call_env(app_id, user), **network_env}
        limits = limits_for(fn.cpu, fn.cpu_limit, fn.memory, fn.memory_limit, fn.ephemeral_disk,
                            self.slots.defaults, machine_cores(), machine_memory_mb())
        launcher: Launcher
        if fn.modal_args is not None:  # deployed by Modal's client: Modal's own container entrypoint (on this machine)
            from .modal_api.launcher import ModalLauncher

            zygotes = self.runtime if isinstance(self.runtime, ZygoteRuntime) and (fn.fork or self.runtime.sandbox) else None
            launcher = ModalLauncher(str(python), files_dir / fn.modal_args, env, cwd, log, web=fn.web is not None,
                                     method_name=fn.method_name, app_id=app_id, user=user, zygotes=zygotes,
                                     calls=lambda: self.modal_service, version_dir=files_dir,
                                     slots=self.slots.supply(limits, user))
        elif isinstance(self.runtime, ClusterRuntime):  # on a cluster's nodes: each node builds its own env
            app_env = {**(secret_env or {}), "WISP_APP": app_id, "WISP_FUNCTION": fn.name, **self.call_env(app_id)}
            launcher = self.runtime.function_launcher(fn, start, app_env, log, user)
        else:
            launcher = self.runtime.launcher(str(python), start, env=env, cwd=cwd, fork=fn.fork, log=log,
                                             startup_timeout=fn.startup_timeout, user=user,
                                             slots=self.slots.supply(limits, user))
        launcher = wrap_network(launcher)
        unplaceable = None
        if not isinstance(self.runtime, ClusterRuntime):  # on this machine: within its cores, on its GPUs
            unplaceable = gpus.unplaceable(fn.gpu, self.capacity.gpus)
            if unplaceable is not None:
                log.write(f"[wisp] {fn.name} cannot run on this machine: {unplaceable}; its requests get 503")
            gpu = () if unplaceable is not None else parse_gpu(fn.gpu)
            # GPUs are held device by device (`gpu`), so the need counts none
            launcher = CappedLauncher(launcher, self.capacity, need_of(fn.cpu, fn.memory, None), gpu)
        labels = (("app", app_id), ("function", fn.name))
        admit: Admit | None
        if fn.web is None:  # a called function: its app's callers only
            admit = call_token_check(self.call_token(app_id))
        else:
            admit = self.proxy_tokens.refusal if fn.web.requires_proxy_auth else None
        socket_dir = self.socket_dir if user is None else user.socket_dir  # the app binds its sockets in its own
        return FunctionPool(fn, launcher, log, socket_dir, config=self.config, metrics=self.metrics, labels=labels,
                            admit=admit, unplaceable=unplaceable)

    def _reclaim(self, asking: object, holders: Collection[object] | None = None) -> bool:
        """The machine is full and `asking`'s requests wait: the container idle the longest (beyond
        its function's warm pool) of any other function, app or version, stops so that its room
        comes back. `holders`: the launchers holding the GPUs `asking` waits for; only theirs."""
        pools = [*(pool for app in self.apps.values() for pool in app.pools.values()), *self._retiring]
        idle = [(when, pool) for pool in pools if pool is not asking and (when := pool.idlest()) is not None
                and (holders is None or pool.launcher in holders)]
        why = "the GPUs it could use are all held" if holders is not None else "the machine's cores are all reserved"
        return bool(idle) and min(idle, key=lambda pair: pair[0])[1].give_up_idle(why)

    def call_env(self, app_id: str, user: AppUser | None = None) -> dict[str, str]:
        """Where and how code of this app calls its functions (read by `wisp._functions`). In a
        sandbox (no network), Unix sockets in the app's own folder (`call_sockets`)."""
        if getattr(self.runtime, "isolated_network", False):
            self.call_sockets.control_port = urllib.parse.urlsplit(self.control_url).port or 0
            folder = self.socket_dir if user is None else user.socket_dir
            return {**self.call_sockets.env(app_id, folder, user), "WISP_CALL_TOKEN": self.call_token(app_id)}
        # Containers on other machines (a cluster's nodes) reach the gateway at WISP_ADVERTISE_HOST.
        host = os.environ.get("WISP_ADVERTISE_HOST") or "127.0.0.1"
        return {"WISP_CALL_URL": f"http://{host}:{self.gateway_port}", "WISP_CONTROL_URL": self.control_url,
                "WISP_CALL_TOKEN": self.call_token(app_id)}

    async def _prove(self, new: RunningApp) -> dict[str, str]:
        """Function name -> why it cannot serve; empty once every function of the new version has
        shown it can (see `_prove_pool`). The first failure ends the wait for the others."""
        old = self.apps.get(new.id)
        tasks = {asyncio.ensure_future(self._prove_pool(pool, old.pools.get(label) if old else None)): pool.spec.name
                 for label, pool in new.pools.items()}
        failures: dict[str, str] = {}
        pending = set(tasks)
        try:
            while pending and not failures:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                failures.update((tasks[task], reason) for task in done if (reason := task.result()) is not None)
        finally:
            for task in pending:
                task.cancel()
        return failures

    async def _prove_pool(self, pool: FunctionPool, replaced: FunctionPool | None) -> str | None:
        """Why this function's new version cannot serve, or None once it has shown it can: its zygote
        imported the script (or a fallback to fresh processes was decided), and a container is
        ready when `proof_containers` asks for one (or there is no room for one: a full cluster)."""
        try:
            import_error = await pool.prepared()  # the first request after a deploy forks, as later ones do
        except NotReady as exc:
            return str(exc)
        count = proof_containers(pool.spec.keep_warm, replaced.live_count() if replaced else 0, import_error is not None)
        if not count or pool.unplaceable is not None:  # a GPU this machine lacks: deployed, its requests get 503
            return None
        pool.prestart(count)
        # On a full cluster the version it replaces holds the room: what its zygote imported proves
        # it, and its containers start as the old ones drain (its requests wait meanwhile).
        if await pool.wait_ready(pool.spec.startup_timeout + PROVE_SLACK, or_no_room=import_error is None):
            return None
        if pool.last_error is None:
            return f"no container became ready within startup_timeout={pool.spec.startup_timeout} s"
        return "\n".join([pool.last_error, *pool.last_output])

    async def _prove_or_fail(self, new: RunningApp, files_dir: Path) -> None:
        """Prove the new version ready; if it cannot be, discard it and raise (`_fail`); if the
        server stops meanwhile, discard it."""
        try:
            failures = await self._prove(new)
        except asyncio.CancelledError:  # the server is stopping
            await self._discard(new, files_dir)
            raise
        if failures:
            await self._fail(new, files_dir, failures)

    async def _fail(self, new: RunningApp, files_dir: Path, failures: dict[str, str]) -> None:
        """The new version never served: stop what it started, say why, and keep the old one."""
        await self._discard(new, files_dir)
        serving = self.apps.get(new.id)
        message = not_ready_message(new.id, new.name, new.version, serving.version if serving else None, failures,
                                    new.mode)
        self.log(new.id).write(f"[wisp] {message}")
        raise DeployError(400, message)

    async def _discard(self, new: RunningApp, files_dir: Path) -> None:
        await asyncio.gather(*(pool.stop() for pool in new.pools.values()))
        shutil.rmtree(files_dir, ignore_errors=True)

    async def _swap(self, new: RunningApp, old: RunningApp | None = None) -> None:
        """Route to the new version, then drain the old one. A deploy proves the new version
        ready first (`_prove`); a restored one is routed at once, its zygotes still importing."""
        old = old or self.apps.get(new.id)
        for label, pool in new.pools.items():
            pool.on_wake = functools.partial(self._woke, new.id)
            self._awake[pool] = new.id  # ticked until it rests
            pool.autoscale()  # the warm pool, if any
            self.routes[label] = pool
        if old is not None:
            for label in set(old.pools) - set(new.pools):
                self.routes.pop(label, None)
            self._drain(old)
        # Heartbeats are counted from now: the `wisp serve` holding an ephemeral app starts
        # sending them only once its deploy has returned, which may be after a long zygote wait.
        new.heartbeat = time.monotonic()
        self.apps[new.id] = new

    def _woke(self, app_id: str, pool: FunctionPool) -> None:
        self._awake[pool] = app_id

    def _drain(self, app: RunningApp) -> None:
        for pool in app.pools.values():
            task = asyncio.ensure_future(pool.drain())
            self._draining.add(task)
            self._retiring[pool] = app.id
            task.add_done_callback(self._draining.discard)
            self._draining_versions[pool] = (app.id, app.version)
            task.add_done_callback(functools.partial(self._drain_done, pool))

    def _drain_done(self, pool: FunctionPool, task: asyncio.Future[None]) -> None:
        self._retiring.pop(pool, None)
        self._drained(pool)

    def _drained(self, pool: FunctionPool) -> None:
        drained = self._draining_versions.pop(pool, None)
        if drained is not None:
            self._prune_pending.add(drained[0])

    async def _prune_versions(self, app_id: str) -> None:
        """Keep an app's last `keep_versions` versions (for rollback), its current one and any
        serving or still draining; forget the older ones: their rows, pinned secret values and
        folders. Safe beside a deploy of the app: its new version is the newest."""
        row = self.store.app(app_id)
        if row is None:
            return
        in_use = {version for owner, version in self._draining_versions.values() if owner == app_id}
        if app_id in self.apps:
            in_use.add(self.apps[app_id].version)
        old = versions_to_prune(self.store.version_numbers(app_id), self.keep_versions, row.version, in_use)
        if not old:
            return
        failures: tuple[type[BaseException], ...] = (*self.store.errors, OSError)
        try:  # the rows first: a folder left behind by a failed removal is never used again
            self.store.delete_versions(app_id, old)
            await asyncio.to_thread(_remove_folders, [self.home / "apps" / app_id / f"v{version}" for version in old])
        except failures as exc:  # a deploy that worked must not fail for its clean-up
            self.log(app_id).write(f"[wisp] could not prune old versions ({exc}); the next deploy tries again")
            return
        self.log(app_id).write(f"[wisp] pruned version(s) {', '.join(map(str, old))}: the last {self.keep_versions} "
                               "are kept (WISP_KEEP_VERSIONS)")

    # -- stop, restore, heartbeats -----------------------------------------------------------
    async def stop(self, app_id: str, owner: str | None = None) -> bool:
        app = self.apps.get(app_id)
        if app is None:
            if self.store.app(app_id) is None:
                return False
            self.store.set_state(app_id, "stopped")
            self.failed.pop(app_id, None)
            return True
        if owner is not None and app.owner != owner:
            return True  # another `serve` has taken this app over; it is theirs to stop
        await self._take_down(app, record=True)
        self.log(app_id).write(f"[wisp] app {app.name} stopped")
        return True

    async def _take_down(self, app: RunningApp, *, record: bool) -> None:
        """Unroute an app and stop its containers; `record`: say so in the store (not when the
        store already says so: stopped through another server)."""
        del self.apps[app.id]
        for label in app.pools:
            self.routes.pop(label, None)
        if record:
            self.store.set_state(app.id, "stopped")
        self._retiring.update((pool, app.id) for pool in app.pools.values())
        try:
            await asyncio.gather(*(pool.stop() for pool in app.pools.values()))
        finally:
            for pool in app.pools.values():
                self._retiring.pop(pool, None)

    async def restore(self) -> None:
        """After a server restart, deployed apps serve again; ephemeral ones are gone. An app
        whose record is damaged (a spec that does not parse or validate, files neither in their
        folder nor in the store) or whose image no longer builds fails alone, with the reason in
        `wisp app list`, its log and the server log; the others start."""
        for row in self.store.apps():
            if row.state != "running":
                continue
            if row.mode != "deploy":
                self.store.set_state(row.id, "stopped")
                continue
            self._tried[row.id] = row.version  # the follower leaves it be, whatever comes of it
            try:
                await self._bring_up(row, prove=False)
            except DeployError as exc:
                self._restore_failed(row.id, exc.message)
            except Exception as exc:  # damage nobody foresaw must still fail only this app
                self._restore_failed(row.id, f"{type(exc).__name__}: {exc}")
        resumed = self.calls.resume()
        if resumed:
            print(f"wisp server: {resumed} spawned call(s) that had not ended run again", flush=True)

    async def rollback(self, app_id: str, version: int | None = None,
                       progress: Progress | None = None) -> dict[str, Any]:
        """Deploy a kept earlier version of a deployed app again, as a new version: built, proven
        ready and switched in like any deploy (the current one serves until then). `version`
        None: the one before the current. Named secrets are read afresh."""
        row = self.store.app(app_id)
        if row is None or row.mode != "deploy":
            raise DeployError(404, f"No deployed app named {app_id!r}. `wisp app list` shows the apps.")
        kept = sorted(v for v in self.store.version_numbers(app_id) if v != row.version)
        target = version if version is not None else max((v for v in kept if v < row.version), default=None)
        if target is None or target not in kept:
            which = f"version {version}" if version is not None else "an earlier version"
            raise DeployError(400, f"App {app_id!r} has no {which} kept to roll back to (kept: "
                                   f"{', '.join(map(str, kept)) or 'none besides the current'}; WISP_KEEP_VERSIONS "
                                   "keeps more).")
        saved, spec = self._saved_version(app_id, target)
        inline = sorted({r.keys[0] if r.keys else "?" for f in spec.functions for r in f.secrets if r.name is None})
        if inline:
            raise DeployError(400, f"Version {target} of {app_id!r} uses secrets given in the script (from_dict / "
                                   "from_dotenv), whose values wisp does not keep: deploy that code again instead.")
        # Its files as deployed, kept in the store; or its folder packed again (saved before bundles were kept).
        files = self.store.bundle(saved.bundle) if saved.bundle else None
        if files is None:
            files = _version_tarball(spec, self._local_folder(saved))
        return await self.deploy(spec.to_dict(), "deploy", files, None, progress)

    async def _bring_up(self, row: AppRow, *, prove: bool) -> None:
        """Serve the app's current version as saved in the store (restore at start, or a version
        another server sharing the store deployed): its images built, its folder unpacked again
        from the store's bundle if this machine lacks it, its pools. `prove`: routed only once
        ready (as a deploy), the version serving meanwhile kept; else routed at once (nothing
        serves it yet: requests wait for its containers rather than meeting a 404)."""
        saved, spec = self._saved_version(row.id, row.version)
        labels = _labels(spec, row.mode, row.id)
        self._check_labels(row.id, labels)  # another app of this server's own may hold one of its URLs
        pythons = await self._build_images(row.id, list(labels.values()))
        secret_env = self.store.version_secrets(row.id, row.version)  # pinned at deploy, inline ones too
        gone = sorted({r.name for f in spec.functions for r in f.secrets if r.name and self.store.secret(r.name) is None})
        if gone:
            self.log(row.id).write(f"[wisp] secret(s) {', '.join(gone)} no longer exist; {row.id} keeps the "
                                   "values it was deployed with. Create them again before the next deploy.")
        async with self._app_lock(row.id):  # no deploy of this server reserves the folder meanwhile
            self._reserved[row.id] = max(self._reserved.get(row.id, 0), row.version)
            files_dir = await self._version_files(saved, spec)
            new = RunningApp(row.id, spec.name, row.mode, row.version, spec,
                             self._pools(row.id, spec, labels, pythons, files_dir, secret_env))
        if not prove:
            await self._swap(new)
            return
        await self._prove_or_fail(new, files_dir)
        async with self._app_lock(row.id):
            stale = self._superseded(new) is not None  # this server deployed a later one meanwhile
            if not stale:
                await self._swap(new)
        if stale:
            await self._discard(new, files_dir)

    def _saved_version(self, app_id: str, version: int) -> tuple[VersionRow, AppSpec]:
        """A version's record and its spec; DeployError saying what is damaged."""
        try:
            saved = self.store.version(app_id, version)
        except StoreError as exc:
            raise DeployError(500, f"{exc}") from None
        try:
            spec = AppSpec.from_dict(saved.spec)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DeployError(500, f"the spec of its version {version} does not validate "
                                   f"({type(exc).__name__}: {exc})") from None
        return saved, spec

    def _local_folder(self, saved: VersionRow) -> Path:
        """The version's folder on this machine; DeployError when it is missing."""
        folder = self.home / "apps" / saved.app_id / f"v{saved.version}"
        if not folder.is_dir():
            raise DeployError(500, f"the files folder of its version {saved.version}, {saved.files_dir}, is missing "
                                   "and the store keeps no copy of its files (it was deployed before wisp kept them)")
        return folder

    async def _version_files(self, saved: VersionRow, spec: AppSpec) -> Path:
        """The version's folder on this machine: the one its deploy unpacked here, else unpacked again
        from the store's bundle (another server deployed it, or this home lost its apps/ folder).
        A version saved before bundles were kept has its folder packed into the store now, so the
        other servers sharing the store can serve it too."""
        folder = self.home / "apps" / saved.app_id / f"v{saved.version}"
        if folder.is_dir():
            if saved.bundle is None:
                packed = await asyncio.to_thread(_version_tarball, spec, folder)
                self.store.set_version_bundle(saved.app_id, saved.version, packed)
            return folder
        files = self.store.bundle(saved.bundle) if saved.bundle else None
        if files is None:
            return self._local_folder(saved)  # raises, saying what is missing
        images = [f.image for f in spec.functions]
        try:
            await asyncio.to_thread(_unpack_bundle, files, images, folder)
        except (ImageBuildError, BundleRefused, tarfile.TarError, OSError) as exc:
            raise DeployError(500, f"the files of its version {saved.version} could not be unpacked from the store "
                                   f"into {folder}: {exc}") from None
        return folder

    def _restore_failed(self, app_id: str, reason: str) -> None:
        message = f"could not restore app {app_id}: {reason}. Deploy it again (`wisp deploy`) or restore a backup."
        self.failed[app_id] = message
        self.log(app_id).write(f"[wisp] {message}")
        print(f"wisp server: {message}", flush=True)

    # -- following the servers that share the store (issue 14) -------------------------------------
    def _follow(self, rows: list[AppRow]) -> None:
        """Start matching what other servers sharing the store did to deployed apps (called each tick
        with the rows it read anyway): a newer version is brought up here, a stopped app stopped."""
        busy = {app_id for app_id, _ in self._deploying} | set(self._following)
        serving = {app.id: app.version for app in self.apps.values() if app.mode == "deploy"}
        for action, row in follow_actions(rows, serving, self._tried, busy):
            self._tried[row.id] = row.version
            work = self._follow_version(row) if action == "deploy" else self._follow_stop(row.id)
            task = asyncio.ensure_future(work)
            self._following[row.id] = task
            task.add_done_callback(functools.partial(self._followed, row.id))

    def _followed(self, app_id: str, task: asyncio.Future[None]) -> None:
        self._following.pop(app_id, None)

    async def _follow_version(self, row: AppRow) -> None:
        log = self.log(row.id)
        log.write(f"[wisp] version {row.version} of {row.name} was deployed through another server sharing the "
                  "store; starting it here")
        try:
            await self._bring_up(row, prove=True)
        except DeployError as exc:
            if row.id not in self.apps:
                self.failed[row.id] = f"could not start version {row.version} here: {exc.message}"
            log.write(f"[wisp] could not start version {row.version} of {row.name} here: {exc.message}")
            return
        except Exception as exc:  # a bug or damage must not end the follower
            log.write(f"[wisp] could not start version {row.version} of {row.name} here: {type(exc).__name__}: {exc}")
            return
        self.failed.pop(row.id, None)
        log.write(f"[wisp] deploy {row.name} version {row.version}: serving here too")
        await asyncio.to_thread(_remove_folders, self._forgotten_folders(row.id))

    async def _follow_stop(self, app_id: str) -> None:
        app = self.apps.get(app_id)
        if app is None or app.mode != "deploy":
            return
        self.log(app_id).write(f"[wisp] app {app.name} was stopped through another server sharing the store; "
                               "stopping it here too")
        await self._take_down(app, record=False)

    def _forgotten_folders(self, app_id: str) -> list[Path]:
        """Folders of this app's versions that the store no longer keeps (another server pruned
        them), older than every kept one (so never a version a deploy here is starting), and not
        serving or draining here."""
        kept = self.store.version_numbers(app_id)
        in_use = {version for owner, version in self._draining_versions.values() if owner == app_id}
        if app_id in self.apps:
            in_use.add(self.apps[app_id].version)
        folders = []
        for folder in (self.home / "apps" / app_id).glob("v*"):
            number = folder.name[1:]
            if number.isdigit() and kept and int(number) < kept[0] and int(number) not in in_use:
                folders.append(folder)
        return folders

    def heartbeat(self, app_id: str, owner: str) -> bool:
        app = self.apps.get(app_id)
        if app is None or app.owner != owner:
            return False
        app.heartbeat = time.monotonic()
        return True

    async def tick(self) -> None:
        now = time.monotonic()
        at = time.time()
        self.history.tick(at)
        for app in list(self.apps.values()):
            if app.mode != "deploy" and now - app.heartbeat > HEARTBEAT_TIMEOUT:
                self.log(app.id).write(f"[wisp] `wisp serve` for {app.name} stopped sending heartbeats; stopping the app")
                await self.stop(app.id)
        # Only the pools that are awake: one scaled to zero with nothing to do rests (its decision could
        # only be 0 again, its seconds are quiet) until a request or a container start wakes it.
        for pool, app_id in list(self._awake.items()):
            if pool.closed:  # its app stopped, or a new version replaced it
                del self._awake[pool]
            elif pool.resting():
                del self._awake[pool]
                pool.rest()
                self.history.known(app_id, pool.spec.name)  # listed in the charts, its seconds quiet
            else:
                pool.tick()
                self.history.add(app_id, pool.spec.name, summarize(pool.take_window(), pool.container_states(), at))
        rows = self.store.apps()  # the one store query of a tick, whatever the number of apps
        self.history.forget(set(self.apps) | {row.id for row in rows})
        self._follow(rows)
        self.calls.expire()
        while self._prune_pending:  # versions that were still draining at their app's last deploy
            await self._prune_versions(self._prune_pending.pop())

    async def close(self, grace: float | None = None) -> None:
        """Server shutdown, once the gateway has drained: every container gets SIGTERM (its
        exit hooks run) and `grace` seconds (default: pool.STOP_GRACE for an idle one) before
        SIGKILL; versions still draining after a redeploy stop the same way."""
        await self.calls.close()
        for task in list(self._following.values()):  # a version coming up from another server's deploy
            task.cancel()
        await asyncio.gather(*self._following.values(), return_exceptions=True)
        retiring = [pool.stop(grace) for pool in list(self._retiring)]
        await asyncio.gather(*(self.stop_running(app, grace) for app in list(self.apps.values())), *retiring)
        for task in list(self._draining):
            await task
        await self.runtime.close()
        await self.call_sockets.close()
        self.slots.close()  # the zygotes are gone too: every slot and the server's cgroup folder
        for log in self.logs.values():
            log.close()

    def kill(self) -> None:
        """A forced server stop: kill every container now (`close()` then ends quickly)."""
        for app in self.apps.values():
            for pool in app.pools.values():
                pool.kill()
        for pool in list(self._retiring):
            pool.kill()

    async def stop_running(self, app: RunningApp, grace: float | None = None) -> None:
        """Server shutdown: stop containers but keep the app's state, so it comes back."""
        for label in app.pools:
            self.routes.pop(label, None)
        await asyncio.gather(*(pool.stop(grace) for pool in app.pools.values()))

    # -- views ---------------------------------------------------------------------------------
    def images_in_use(self) -> dict[str, list[str]]:
        """Image build key -> ids of the apps whose running (or restorable, or draining) versions use it."""
        used: dict[str, list[str]] = {}
        specs = [(app.id, app.spec) for app in self.apps.values()] + self._deploying
        for row in self.store.apps():
            if row.state == "running" and row.mode == "deploy" and row.id not in self.apps:
                try:
                    specs.append((row.id, self._saved_version(row.id, row.version)[1]))
                except DeployError:
                    pass  # a damaged record names no image we could keep
        for app_id, spec in specs:
            for fn in spec.functions:
                used.setdefault(build_key(fn.image), []).append(app_id)
        for pool, app_id in self._retiring.items():
            used.setdefault(build_key(pool.spec.image), []).append(app_id)
        return used

    def _pools_with_labels(self) -> list[tuple[Labels, FunctionPool]]:
        return [((("app", app.id), ("function", pool.spec.name)), pool)
                for app in self.apps.values() for pool in app.pools.values()]

    def _container_gauge(self) -> list[tuple[Labels, float]]:
        out = []
        for labels, pool in self._pools_with_labels():
            states = pool.container_states()
            for state in ("starting", "ready", "busy", "draining"):
                out.append(((*labels, ("state", state)), float(states.get(state, 0))))
        return out

    def _pool_gauge(self, key: str) -> list[tuple[Labels, float]]:
        return [(labels, float(pool.status()[key])) for labels, pool in self._pools_with_labels()]  # type: ignore[arg-type]  # these keys hold ints

    def describe(self, app: RunningApp) -> dict[str, Any]:
        endpoints = []
        functions = []
        for label, pool in app.pools.items():
            if pool.spec.web is None:
                functions.append({"function": pool.spec.name, "web": None, **pool.status()})
                continue
            by_host, by_path = endpoint_urls(label, self.gateway_port)
            endpoints.append({"function": pool.spec.name, "label": label, "url": by_host, "path_url": by_path,
                              "web": pool.spec.web.kind, "requires_proxy_auth": pool.spec.web.requires_proxy_auth,
                              **pool.status()})
        return {"id": app.id, "name": app.name, "mode": app.mode, "state": "running", "version": app.version,
                "endpoints": endpoints, "functions": functions}

    def running_or_stopping(self, app_id: str) -> bool:
        """Whether the app runs or is still stopping: its log may yet grow."""
        return app_id in self.apps or app_id in self._retiring.values()

    def nodes(self) -> list[dict[str, Any]]:
        """The machines containers run on (`wisp node list`): a cluster's nodes, else this one."""
        if isinstance(self.runtime, ClusterRuntime):
            return self.runtime.describe()
        used, total = self.capacity.reserved, self.capacity.total
        return [{"name": "local", "state": "up", "address": "127.0.0.1", "epoch": 0, "cpu": total.cpu,
                 "memory_mb": total.memory_mb, "gpu": len(self.capacity.gpus.devices), "reserved_cpu": round(used.cpu, 3),
                 "reserved_memory_mb": used.memory_mb, "reserved_gpu": len(self.capacity.gpus_held),
                 "gpus": self.capacity.gpus.describe(), "containers": self.capacity.containers,
                 "runtime": self.runtime.name}]

    def drain_node(self, name: str) -> int:
        """The node takes no new container; each of its containers finishes its requests and stops
        while the pools start what they still need elsewhere. How many containers drain."""
        if not isinstance(self.runtime, ClusterRuntime):
            raise DeployError(400, f"This server runs containers on this machine only (runtime {self.runtime.name}): "
                                   "there is no node to drain. Stop apps with `wisp app stop`, or the server itself.")
        try:
            self.runtime.drain(name)
        except KeyError:
            known = ", ".join(n["name"] for n in self.runtime.describe()) or "none"
            raise DeployError(404, f"No node is called {name!r} (nodes: {known}); `wisp node list` shows them.") from None
        draining = 0
        for app in self.apps.values():
            for pool in app.pools.values():
                for cid in pool.containers_on(name):
                    draining += pool.stop_container(cid, f"(node {name} drains)")
        print(f"wisp server: node {name} draining: {draining} container(s) finish their requests and stop", flush=True)
        return draining

    def list(self) -> list[dict[str, Any]]:
        out = []
        for row in self.store.apps():
            running = self.apps.get(row.id)
            if running is not None:
                out.append(self.describe(running))
            else:
                failed = self.failed.get(row.id) if row.state == "running" else None
                out.append({"id": row.id, "name": row.name, "mode": row.mode, "state": "failed" if failed else "stopped",
                            "version": row.version, "endpoints": [], "functions": [],
                            **({"error": failed} if failed else {})})
        return out


def _check_network(spec: AppSpec) -> None:
    """Each function's `network=` as the SDK checks it (a spec may come from another client)."""
    for f in spec.functions:
        try:
            canonical_network(f.network, f"function `{f.name}`")
        except (TypeError, ValueError) as exc:
            raise DeployError(400, str(exc)) from None


def _labels(spec: AppSpec, mode: str, app_id: str) -> dict[str, FunctionSpec]:
    """Route label -> function: a URL label for each web function (none under `wisp run`, whose
    app only serves calls), an internal call route for each function without a web decorator."""
    labels: dict[str, FunctionSpec] = {}
    for f in spec.functions:
        if f.web is None:
            labels[call_label(app_id, f.name)] = f
            continue
        if mode == "run":
            continue
        label = make_label(spec.name, f.name, label=f.web.label, dev=mode == "serve")
        if label in labels:
            raise DeployError(400, f"Functions `{labels[label].name}` and `{f.name}` would share the URL label "
                                   f"{label!r}. Give one of them another name or `label=`.")
        labels[label] = f
    return labels


def proof_containers(keep_warm: int, replaced_running: int, import_failed: bool) -> int:
    """Containers a function's new version starts before it is routed; one of them must become
    ready. Its warm pool; as many as the version it replaces runs (it takes over as warm); one
    when its zygote could not import the script, since its containers now import it themselves
    and only a ready one shows that they can."""
    return max(keep_warm, replaced_running, 1 if import_failed else 0)


def not_ready_message(app_id: str, name: str, version: int, serving: int | None, failures: dict[str, str],
                      mode: str = "deploy") -> str:
    """What a deploy whose version did not become ready answers: each function's reason."""
    kept = f"version {serving} keeps serving" if serving is not None else "nothing of it serves"
    lines = [f"Version {version} of {name} did not become ready, so it was not switched in; {kept}."]
    for function, reason in sorted(failures.items()):
        first, *rest = reason.splitlines()
        lines += [f"  {function}: {first}", *(f"    {line}" for line in rest)]
    again = "save it again" if mode == "serve" else "deploy again"
    lines.append(f"Fix the script (`wisp app logs {app_id}` has the whole output), then {again}.")
    return "\n".join(lines)


def versions_to_prune(versions: list[int], keep: int, current: int, in_use: set[int]) -> list[int]:
    """The versions to forget: all but the newest `keep`, never the current one or one in use
    (serving, or draining)."""
    newest = set(sorted(versions)[-keep:]) if keep > 0 else set()
    return sorted(v for v in versions if v not in newest and v != current and v not in in_use)


def follow_actions(rows: list[AppRow], serving: dict[str, int], tried: dict[str, int],
                   busy: set[str]) -> list[tuple[str, AppRow]]:
    """What a server does to match deployed apps to its store, which other servers may share:
    ("deploy", row) for a running app whose current version is newer than the one it serves
    (`serving`: app id -> version) and than any it has tried to start (`tried`: restored or
    followed, failed or not: never again each tick); ("stop", row) for an app it serves that the
    store says is stopped. Apps with a deploy, a follow or a stop under way here (`busy`) wait for
    a later tick; `wisp serve`/`run` apps are not followed: they belong to the server whose CLI
    session holds them."""
    actions: list[tuple[str, AppRow]] = []
    for row in rows:
        if row.mode != "deploy" or row.id in busy:
            continue
        if row.state == "stopped" and row.id in serving:
            actions.append(("stop", row))
        elif row.state == "running" and row.version > max(serving.get(row.id, 0), tried.get(row.id, 0)):
            actions.append(("deploy", row))
    return actions


def _unpack_bundle(files: bytes, images: list[ImageSpec], target: Path) -> None:
    """A version's folder made again from its bundle (the deploy's tar.gz): unpacked beside it,
    the images' local files placed (`.wisp-mounts/`), then renamed into place, so a folder that
    exists is whole."""
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        # Sizes were checked when it was deployed (maybe under another server's limits); its members again.
        extract_bundle(files, partial, None)
        place_files(images, partial)
        os.rename(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _remove_folders(folders: list[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def keep_versions_from_env() -> int:
    """WISP_KEEP_VERSIONS: how many versions of each app to keep, the current one included."""
    value = os.environ.get("WISP_KEEP_VERSIONS", "")
    if not value:
        return KEEP_VERSIONS
    try:
        keep = int(value)
    except ValueError:
        keep = 0
    if keep < 1:
        raise SystemExit(f"wisp server: WISP_KEEP_VERSIONS={value!r} must be a whole number of versions, at least 1 "
                         f"(the current one); unset, {KEEP_VERSIONS} are kept.")
    return keep


def resolve_secrets(spec: AppSpec, lookup: Callable[[str], dict[str, str] | None]) -> dict[str, dict[str, str]]:
    """Function name -> the environment its `secrets=[...]` give, later entries overriding earlier
    ones. Named secrets come from `lookup`; inline ones carry their values in the spec as sent."""
    out: dict[str, dict[str, str]] = {}
    for fn in spec.functions:
        env: dict[str, str] = {}
        for ref in fn.secrets:
            if ref.name is None:
                env.update(ref.env or {})
                continue
            values = lookup(ref.name)
            if values is None:
                raise DeployError(400, f"Secret {ref.name!r} does not exist. Create it with "
                                       f"`wisp secret create {ref.name} KEY=VALUE ...`, then serve/deploy again.")
            missing = [k for k in ref.required_keys if k not in values]
            if missing:
                raise DeployError(400, f"Secret {ref.name!r} has no key {', '.join(missing)}, which function "
                                       f"`{fn.name}` requires. Add it with `wisp secret create {ref.name} "
                                       f"{missing[0]}=... --force` (give all its keys), then serve/deploy again.")
            env.update(values)
        if env:
            out[fn.name] = env
    return out



def secrets_equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _version_tarball(spec: AppSpec, files_dir: Path) -> bytes:
    """A kept version's folder as a deploy's tarball: its files, and the images' local files
    again under MOUNT_BLOBS by their digests, read from where they were placed."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        tar.add(files_dir, arcname=".", recursive=True)
        done: set[str] = set()
        for fn in spec.functions:
            for _, remote, sha in fn.image.local_files():
                if sha and sha not in done:
                    done.add(sha)
                    tar.add(local_path(remote, files_dir), arcname=f"{MOUNT_BLOBS}/{sha}")
    return buffer.getvalue()
