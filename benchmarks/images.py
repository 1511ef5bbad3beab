"""Image builds on the local runtime: cold build, cached resolve, first import with and without
bytecode compiled at build time. wisp and its baseline side by side, in the same run.

    .venv/bin/python -P benchmarks/images.py [--runs 5] [--imports 10] [--cold-cache] [--json PATH]

- cold build: `Image.debian_slim().pip_install("requests")` in a fresh $WISP_HOME, through wisp's
  builder (venv + the agent's packages + requests, bytecode compiled, progress reported) vs. the
  baseline: the same packages with two plain uv commands (`uv venv`, `uv pip install`), no
  compilation. uv's cache is warm (any machine that has built once); `--cold-cache` adds one run
  of each with an empty uv cache, downloads included.
- cold build in the build sandbox: the same, as a server builds (build uid, namespaces, egress
  through the proxy; uv copies from the builds' own cache instead of hard-linking).
- cached resolve: `LocalImageBuilder.ensure()` for an image already built: what a second `serve`
  or `deploy` of the same image pays on the server.
- first import: `import requests, fastapi, uvicorn, pydantic` in a fresh interpreter with
  PYTHONDONTWRITEBYTECODE=1 (as containers run), in wisp's image vs. the baseline's environment
  (same packages, no .pyc files); `python -c pass` in each is the interpreter's own start.

--json PATH writes the samples in ms (see _results.py).
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))
import _results
from wisp import Image
from wisp.server import build_sandbox
from wisp.server.images import LocalImageBuilder, runtime_requirements

IMAGE = Image.debian_slim().pip_install("requests")
IMPORTS = "import requests, fastapi, uvicorn, pydantic"


def uv() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def wisp_build(home: Path, sandbox_cache: Path | None = None) -> tuple[float, Path]:
    """`sandbox_cache`: build in the build sandbox, as the server does, with this (shared) uv cache."""
    builder = LocalImageBuilder(home)
    if sandbox_cache is not None:
        sandbox, notes = build_sandbox.configure(home, os.environ)
        if sandbox is None:
            raise SystemExit(f"the build sandbox is not available here: {notes}")
        builder.sandbox = dataclasses.replace(sandbox, cache=sandbox_cache)
        builder.readable_by_others = not sandbox.user_ns
    started = time.perf_counter()
    python = asyncio.run(builder.ensure(IMAGE.spec))
    return time.perf_counter() - started, python


def baseline_build(folder: Path) -> tuple[float, Path]:
    started = time.perf_counter()
    subprocess.run([uv(), "venv", "-q", "--relocatable", "--python", sys.executable, str(folder)], check=True)
    subprocess.run([uv(), "pip", "install", "-q", "--python", str(folder / "bin" / "python"),
                    *runtime_requirements(["requests"]), "requests"], check=True)
    return time.perf_counter() - started, folder / "bin" / "python"


def cached_resolve(home: Path, calls: int) -> list[float]:
    builder = LocalImageBuilder(home)

    async def main() -> list[float]:
        await builder.ensure(IMAGE.spec)
        out = []
        for _ in range(calls):
            started = time.perf_counter()
            await builder.ensure(IMAGE.spec)
            out.append(time.perf_counter() - started)
        return out

    return asyncio.run(main())


def first_import(python: Path, code: str, runs: int) -> list[float]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("VIRTUAL_ENV", None)
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([str(python), "-c", code], check=True, env=env)
        out.append(time.perf_counter() - started)
    return out


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f}"


def p99(values: list[float]) -> str:
    return f"{sorted(values)[min(len(values) - 1, int(len(values) * 0.99))] * 1000:.2f}"


def with_uv_cache(cache: Path, run, *args):  # type: ignore[no-untyped-def]
    previous = os.environ.get("UV_CACHE_DIR")
    os.environ["UV_CACHE_DIR"] = str(cache)
    try:
        return run(*args)
    finally:
        if previous is None:
            os.environ.pop("UV_CACHE_DIR", None)
        else:
            os.environ["UV_CACHE_DIR"] = previous


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5, help="cold builds of each kind")
    parser.add_argument("--imports", type=int, default=10, help="fresh interpreters per import measure")
    parser.add_argument("--cold-cache", action="store_true", help="also one build of each with an empty uv cache")
    parser.add_argument("--json", metavar="PATH", help="write the samples here (benchmarks/_results.py)")
    args = parser.parse_args()
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="wisp-bench-images-") as tmp:
        root = Path(tmp)
        wisp_build(root / "warmup")  # uv's cache holds every package from here on
        baseline_build(root / "warmup-baseline")
        os.chmod(root, 0o711)  # the build uid passes through to its cache (a server's WISP_HOME is so too)
        wisp_build(root / "warmup-sandboxed", root / "build-cache")  # the builds' own cache (the build uid's)
        wisp_times, base_times, boxed_times = [], [], []
        for i in range(args.runs):
            seconds, wisp_python = wisp_build(root / f"home{i}")
            wisp_times.append(seconds)
            boxed_times.append(wisp_build(root / f"boxed{i}", root / "build-cache")[0])
            seconds, base_python = baseline_build(root / f"baseline{i}")
            base_times.append(seconds)
        resolve = cached_resolve(root / "home0", 1000)
        imports = {
            "wisp image (bytecode compiled at build)": first_import(wisp_python, IMPORTS, args.imports),
            "baseline env (no .pyc)": first_import(base_python, IMPORTS, args.imports),
        }
        starts = {"wisp": first_import(wisp_python, "pass", args.imports), "baseline": first_import(base_python, "pass", args.imports)}
        cold = {}
        if args.cold_cache:
            cold["wisp"] = with_uv_cache(root / "cache-wisp", wisp_build, root / "cold-home")[0]
            cold["baseline"] = with_uv_cache(root / "cache-base", baseline_build, root / "cold-baseline")[0]

    print("\n| image `pip_install(\"requests\")` | wisp median ms | wisp max ms | baseline median ms | baseline max ms | target |")
    print("|---|---|---|---|---|---|")
    print(f"| cold build, uv cache warm ({args.runs} runs) | {ms(wisp_times)} | {max(wisp_times) * 1000:.1f} | "
          f"{ms(base_times)} | {max(base_times) * 1000:.1f} | ≤ 1500 |")
    print(f"| cold build in the build sandbox (as the server builds), its uv cache warm ({args.runs} runs) | "
          f"{ms(boxed_times)} | {max(boxed_times) * 1000:.1f} | {ms(base_times)} | {max(base_times) * 1000:.1f} | |")
    if cold:
        print(f"| cold build, uv cache empty (1 run) | {cold['wisp'] * 1000:.1f} | | {cold['baseline'] * 1000:.1f} | | |")
    print(f"| cached resolve, ensure() (1000 calls; p99 {p99(resolve)} ms) | {statistics.median(resolve) * 1000:.3f} | "
          f"{max(resolve) * 1000:.2f} | | | ≤ 100 |")
    print(f"\n| first import: `{IMPORTS}`, fresh interpreter, PYTHONDONTWRITEBYTECODE=1 ({args.imports} runs) | median ms | "
          "interpreter start alone, median ms |")
    print("|---|---|---|")
    for (label, values), start in zip(imports.items(), starts.values()):
        print(f"| {label} | {ms(values)} | {ms(start)} |")

    def in_ms(values: list[float]) -> tuple[str, list[float | None]]:
        return "ms", [v * 1000 for v in values]

    (wisp_imports, base_imports), (wisp_start, base_start) = imports.values(), starts.values()
    measured = {"build.wisp": in_ms(wisp_times), "build_sandboxed.wisp": in_ms(boxed_times), "build.baseline": in_ms(base_times), "resolve.wisp": in_ms(resolve),
                "import.wisp": in_ms(wisp_imports), "import.baseline": in_ms(base_imports),
                "interpreter.wisp": in_ms(wisp_start), "interpreter.baseline": in_ms(base_start)}
    for side, seconds in cold.items():
        measured[f"build_empty_cache.{side}"] = in_ms([seconds])
    _results.write(args.json, "images", measured, {"runs": args.runs, "imports": args.imports})


if __name__ == "__main__":
    main()
