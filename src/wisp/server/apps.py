"""Apps and their versions: build images, unpack code, swap routes, drain what was replaced."""
from __future__ import annotations

import asyncio
import hmac
import io
import os
import secrets
import shutil
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._spec import AppSpec, FunctionSpec
from .._urls import app_id_for, call_label, endpoint_urls, make_label
from .auth import ProxyTokens, call_token_check, digest, new_proxy_token
from .images import (
    ImageBuildError, LocalImageBuilder, Progress, build_key, check_local_runtime, container_settings, place_files,
)
from .logs import AppLog
from .metrics import Gauge, Labels, Metrics
from .pool import FunctionPool, PoolConfig
from .runtime import Runtime
from .spawned import SpawnedCalls
from .store import Store

HEARTBEAT_TIMEOUT = 10.0  # an ephemeral app whose `wisp serve` went silent this long is stopped
PREPARE_WAIT = 30.0  # a deploy waits this long at most for its zygotes (a slow import goes on after)


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


class AppManager:
    def __init__(self, home: Path, store: Store, builder: LocalImageBuilder, runtime: Runtime,
                 routes: dict[str, Any], gateway_port: int, socket_dir: str,
                 config: PoolConfig = PoolConfig(), metrics: Metrics | None = None) -> None:
        self.home = home
        self.store = store
        self.builder = builder
        self.runtime = runtime
        self.routes = routes
        self.gateway_port = gateway_port
        self.socket_dir = socket_dir
        self.config = config
        self.metrics = metrics or Metrics()
        self.metrics.gauges += [
            Gauge("wisp_containers", "Containers by app, function and state.", self._container_gauge),
            Gauge("wisp_queued_requests", "Requests waiting for a container slot.", lambda: self._pool_gauge("queued")),
            Gauge("wisp_in_flight_requests", "Requests being served.", lambda: self._pool_gauge("in_flight")),
        ]
        self.apps: dict[str, RunningApp] = {}
        self.logs: dict[str, AppLog] = {}
        self._draining: set[asyncio.Task[None]] = set()
        self._retiring: dict[FunctionPool, str] = {}  # draining or stopping -> app id: their images stay
        self._deploying: list[tuple[str, AppSpec]] = []
        self._lock = asyncio.Lock()
        self.control_url = ""  # set once the control API listens; containers spawn calls there
        self.calls = SpawnedCalls(store, self._call_pool, lambda app_id, line: self.log(app_id).write(line))
        self._call_tokens: dict[str, str] = {}  # app id -> its call token (kept in SQLite too)
        self.proxy_tokens = ProxyTokens((row.key, row.secret_sha256) for row in store.proxy_tokens())

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

    def log(self, app_id: str) -> AppLog:
        if app_id not in self.logs:
            self.logs[app_id] = AppLog(self.home / "logs" / f"{app_id}.log")
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
        self._check_labels(app_id, labels)
        images = [f.image for f in labels.values()]
        try:
            check_local_runtime(images)
        except ImageBuildError as exc:
            raise DeployError(400, str(exc)) from None
        self._deploying.append((app_id, spec))  # `wisp image prune` keeps its images from now on
        try:
            # Outside the lock: builds of different apps run in parallel; the builder shares equal ones.
            pythons = await self._build_images(app_id, list(labels.values()), progress)
            async with self._lock:  # one deploy at a time keeps versions and routes consistent
                version = self.store.next_version(app_id)
                files_dir = self._unpack(app_id, version, files)
                try:
                    place_files(images, files_dir)
                except ImageBuildError as exc:
                    raise DeployError(400, str(exc)) from None
                self.store.save_version(app_id, spec.name, mode, version, spec.to_dict(), str(files_dir))
                self.store.save_version_secrets(app_id, version, secret_env)  # for restore(): values pinned
                await self._swap(RunningApp(app_id, spec.name, mode, version, spec,
                                            self._pools(app_id, spec, labels, pythons, files_dir, secret_env), owner))
        finally:
            self._deploying.remove((app_id, spec))
        web = [label for label, f in labels.items() if f.web is not None]
        self.log(app_id).write(f"[wisp] {mode} {spec.name} version {version}: {', '.join(web) or 'no web functions'}")
        # The caller (the CLI, with the server's token) gets the app's call token: `wisp run` calls with it.
        return {**self.describe(self.apps[app_id]), "call_token": self.call_token(app_id),
                "control_url": self.control_url, "call_url": f"http://127.0.0.1:{self.gateway_port}"}

    def _secret_values(self, name: str) -> dict[str, str] | None:
        row = self.store.secret(name)
        return None if row is None else row.values

    def _check_labels(self, app_id: str, labels: dict[str, FunctionSpec]) -> None:
        for other in self.apps.values():
            if other.id == app_id:
                continue
            clash = {label for label, f in labels.items() if f.web is not None} & set(other.pools)
            if clash:
                raise DeployError(409, f"URL label {sorted(clash)[0]!r} is already served by app {other.id!r}. "
                                       f"Give the function another `label=`, or stop that app with `wisp app stop {other.id}`.")

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
        with tarfile.open(fileobj=io.BytesIO(files), mode="r:gz") as tar:
            tar.extractall(target, filter="data")
        return target

    def _pools(self, app_id: str, spec: AppSpec, labels: dict[str, FunctionSpec], pythons: dict[str, Path],
               files_dir: Path, secret_env: dict[str, dict[str, str]] | None = None) -> dict[str, FunctionPool]:
        log = self.log(app_id)
        return {label: self._pool(app_id, spec, fn, pythons[fn.name], files_dir, log, (secret_env or {}).get(fn.name, {}))
                for label, fn in labels.items()}

    def _pool(self, app_id: str, spec: AppSpec, fn: FunctionSpec, python: Path, files_dir: Path, log: AppLog,
              secret_env: dict[str, str] | None = None) -> FunctionPool:
        argv = [str(python), "-m", "wisp._runtime", "--dir", str(files_dir), "--module", spec.module,
                "--stub", spec.stub_attr, "--function", fn.name]
        image_env, cwd = container_settings(fn.image, python, files_dir)
        env = {**_container_env(), **image_env, **(secret_env or {}), "WISP_APP": app_id, "WISP_FUNCTION": fn.name,
               **self.call_env(app_id)}
        launcher = self.runtime.launcher(argv, env=env, cwd=cwd, fork=fn.fork, log=log, startup_timeout=fn.startup_timeout)
        labels = (("app", app_id), ("function", fn.name))
        if fn.web is None:  # a called function: its app's callers only
            admit = call_token_check(self.call_token(app_id))
        else:
            admit = self.proxy_tokens.refusal if fn.web.requires_proxy_auth else None
        return FunctionPool(fn, launcher, log, self.socket_dir, config=self.config, metrics=self.metrics, labels=labels,
                            admit=admit)

    def call_env(self, app_id: str) -> dict[str, str]:
        """Where and how code of this app calls its functions (read by `wisp._functions`)."""
        return {"WISP_CALL_URL": f"http://127.0.0.1:{self.gateway_port}", "WISP_CONTROL_URL": self.control_url,
                "WISP_CALL_TOKEN": self.call_token(app_id)}

    async def _swap(self, new: RunningApp, old: RunningApp | None = None) -> None:
        """Start the new version's containers, route to it, then drain the old version."""
        old = old or self.apps.get(new.id)
        # The zygotes first: the first request after a deploy forks, as every later cold start does.
        await asyncio.gather(*(pool.prepared(PREPARE_WAIT) for pool in new.pools.values()))
        if old is not None:
            warming = []
            for label, pool in new.pools.items():
                previous = old.pools.get(label)
                running = previous.live_count() if previous else 0
                if running:  # the replacing version is as warm as the old one before it takes over
                    pool.prestart(running)
                    warming.append(pool.wait_ready(pool.spec.startup_timeout))
            await asyncio.gather(*warming)
        for label, pool in new.pools.items():
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

    def _drain(self, app: RunningApp) -> None:
        for pool in app.pools.values():
            task = asyncio.ensure_future(pool.drain())
            self._draining.add(task)
            self._retiring[pool] = app.id
            task.add_done_callback(self._draining.discard)
            task.add_done_callback(lambda _, pool=pool: self._retiring.pop(pool, None))  # type: ignore[misc]

    # -- stop, restore, heartbeats -----------------------------------------------------------
    async def stop(self, app_id: str, owner: str | None = None) -> bool:
        app = self.apps.get(app_id)
        if app is None:
            if self.store.app(app_id) is None:
                return False
            self.store.set_state(app_id, "stopped")
            return True
        if owner is not None and app.owner != owner:
            return True  # another `serve` has taken this app over; it is theirs to stop
        del self.apps[app_id]
        for label in app.pools:
            self.routes.pop(label, None)
        self.store.set_state(app_id, "stopped")
        self._retiring.update((pool, app_id) for pool in app.pools.values())
        try:
            await asyncio.gather(*(pool.stop() for pool in app.pools.values()))
        finally:
            for pool in app.pools.values():
                self._retiring.pop(pool, None)
        self.log(app_id).write(f"[wisp] app {app.name} stopped")
        return True

    async def restore(self) -> None:
        """After a server restart, deployed apps serve again; ephemeral ones are gone."""
        for row in self.store.apps():
            if row.state != "running":
                continue
            if row.mode != "deploy":
                self.store.set_state(row.id, "stopped")
                continue
            saved = self.store.version(row.id, row.version)
            spec = AppSpec.from_dict(saved.spec)
            labels = _labels(spec, row.mode, row.id)
            try:
                pythons = await self._build_images(row.id, list(labels.values()))
            except DeployError as exc:
                self.log(row.id).write(f"[wisp] could not restore {row.id}: {exc.message}")
                continue
            secret_env = self.store.version_secrets(row.id, row.version)  # pinned at deploy, inline ones too
            gone = sorted({r.name for f in spec.functions for r in f.secrets if r.name and self.store.secret(r.name) is None})
            if gone:
                self.log(row.id).write(f"[wisp] secret(s) {', '.join(gone)} no longer exist; {row.id} keeps the "
                                       "values it was deployed with. Create them again before the next deploy.")
            pools = self._pools(row.id, spec, labels, pythons, Path(saved.files_dir), secret_env)
            await self._swap(RunningApp(row.id, spec.name, row.mode, row.version, spec, pools))
        resumed = self.calls.resume()
        if resumed:
            print(f"wisp server: {resumed} spawned call(s) that had not ended run again", flush=True)

    def heartbeat(self, app_id: str, owner: str) -> bool:
        app = self.apps.get(app_id)
        if app is None or app.owner != owner:
            return False
        app.heartbeat = time.monotonic()
        return True

    async def tick(self) -> None:
        now = time.monotonic()
        for app in list(self.apps.values()):
            if app.mode != "deploy" and now - app.heartbeat > HEARTBEAT_TIMEOUT:
                self.log(app.id).write(f"[wisp] `wisp serve` for {app.name} stopped sending heartbeats; stopping the app")
                await self.stop(app.id)
                continue
            for pool in app.pools.values():
                pool.tick()
        self.calls.expire()

    async def close(self, grace: float | None = None) -> None:
        """Server shutdown, once the gateway has drained: every container gets SIGTERM (its
        exit hooks run) and `grace` seconds (default: pool.STOP_GRACE for an idle one) before
        SIGKILL; versions still draining after a redeploy stop the same way."""
        await self.calls.close()
        retiring = [pool.stop(grace) for pool in list(self._retiring)]
        await asyncio.gather(*(self.stop_running(app, grace) for app in list(self.apps.values())), *retiring)
        for task in list(self._draining):
            await task
        await self.runtime.close()
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
        specs += [(row.id, AppSpec.from_dict(self.store.version(row.id, row.version).spec)) for row in self.store.apps()
                  if row.state == "running" and row.mode == "deploy" and row.id not in self.apps]
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
        return [(labels, float(pool.status()[key])) for labels, pool in self._pools_with_labels()]  # type: ignore[arg-type]

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

    def list(self) -> list[dict[str, Any]]:
        out = []
        for row in self.store.apps():
            running = self.apps.get(row.id)
            if running is not None:
                out.append(self.describe(running))
            else:
                out.append({"id": row.id, "name": row.name, "mode": row.mode, "state": "stopped",
                            "version": row.version, "endpoints": [], "functions": []})
        return out


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


def _container_env() -> dict[str, str]:
    """The container's environment: the server's, minus what would point Python elsewhere."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env



def secrets_equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())
