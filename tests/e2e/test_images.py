"""Images on the local runtime (issue 4): built in parallel while the CLI shows it, cached,
isolated from each other; build commands, env, workdir and local files seen in containers;
what cannot be built fails with the reason; `wisp image list|prune`."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from .conftest import REPO, Wisp, get, wait_until

pytestmark = pytest.mark.e2e


def project(tmp_path: Path, data: str = "v1") -> Path:
    """The app in src/ and the file its image mounts in shared/, beside it (not shipped with the script)."""
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "shared").mkdir(exist_ok=True)
    (tmp_path / "shared" / "data.txt").write_text(data)
    return Path(shutil.copy(REPO / "tests/e2e/apps/images_two.py", tmp_path / "src" / "images_two.py"))


def image_keys(output: str) -> dict[str, str]:
    """function -> short image key, from the "Image <key> (<function>): ..." lines."""
    return {fn: key for key, fn in re.findall(r"^Image (\w+) \((\w+)\): ", output, re.M)}


def test_two_images_build_in_parallel_serve_at_once_and_hit_the_cache(wisp: Wisp, tmp_path: Path) -> None:
    script = project(tmp_path)
    with wisp.serve(script) as serve:
        serve.wait_for("Watching")
        out = serve.output
        keys = image_keys(out)
        assert set(keys) == {"six_fn", "jmespath_fn"} and len(set(keys.values())) == 2
        for fn, key in keys.items():  # a line per step with its time, the tail of uv's output
            assert re.search(rf"^  {key} \[1/\d\] create environment \(Python 3", out, re.M), out
            assert re.search(rf"^  {key} \[\d/\d\] done in \d+\.\d\d s$", out, re.M), out
            assert re.search(rf"^  {key}     \| .*(Installed|Audited|\+ )", out, re.M), out
            assert re.search(rf"^Image {key} \({fn}\): (built in \d+\.\d\d s|cached)", out, re.M), out
        built = [i for i, line in enumerate(out.splitlines()) if ": built in" in line]
        building = [i for i, line in enumerate(out.splitlines()) if ": building," in line]
        if len(built) == 2:  # both were built now (not cached by an earlier run): in parallel
            assert max(building) < min(built), out
        assert f"  {keys['jmespath_fn']} [2/4] pip_install jmespath (+ " in out  # one resolution with the agent's pins
        assert f"  {keys['jmespath_fn']} [3/4] run_commands: echo made at build > made.txt" in out

        assert get(wisp.url("images--six-fn-dev")).json() == {"six": True, "jmespath": False}
        seen = get(wisp.url("images--jmespath-fn-dev")).json()
        assert (seen["six"], seen["jmespath"]) == (False, True)
        assert re.search(r"/apps/images-dev/v\d+/work$", seen["cwd"]), seen  # workdir("work"), below /root
        assert seen["data"] == "v1"
        assert seen["made"] == "made at build\n"
        assert seen["venv"] == seen["prefix"]  # commands ran with the image's environment active
        assert seen["greeting"] == "hello"

        # serve follows the image's local files too, outside the script's folder; no rebuild for that
        mark = len(serve.lines)
        (tmp_path / "shared" / "data.txt").write_text("v2")
        serve.wait_for("Updated images", start=mark)
        assert f"Image {keys['jmespath_fn']} (jmespath_fn): cached" in "".join(serve.lines[mark:])
        assert get(wisp.url("images--jmespath-fn-dev")).json()["data"] == "v2"

    with wisp.serve(script) as again:  # the second serve of the same images: one "cached" line each
        again.wait_for("Watching")
        for fn, key in keys.items():
            assert re.search(rf"^Image {key} \({fn}\): cached \(\d+\.\d ms\)$", again.output, re.M), again.output
        assert "building" not in again.output
        assert get(wisp.url("images--six-fn-dev")).json() == {"six": True, "jmespath": False}


def test_deployed_local_files_stay_as_deployed_and_images_are_listed_and_pruned(own_wisp: Wisp, tmp_path: Path) -> None:
    script = project(tmp_path, "deployed")
    first = own_wisp.run("deploy", str(script)).stdout
    keys = image_keys(first)
    assert "building" in first
    second = own_wisp.run("deploy", str(script)).stdout
    assert image_keys(second) == keys
    assert second.count(": cached (") == 2 and "building" not in second

    url = own_wisp.url("images--jmespath-fn")
    assert get(url).json()["data"] == "deployed"
    (tmp_path / "shared" / "data.txt").write_text("edited after deploy")
    assert get(url).json()["data"] == "deployed"  # the version has its own copy

    listing = own_wisp.run("image", "list").stdout
    assert re.search(r"^IMAGE\s+SIZE\s+LAST USE\s+PYTHON\s+USED BY\s+PACKAGES$", listing, re.M), listing
    for package, fn in (("six", "six_fn"), ("jmespath", "jmespath_fn")):
        assert re.search(rf"^{keys[fn]}\w*\s+\d+\.\d MB\s+\d+ s ago\s+3\.\d+\.\d+\s+images\s+{package}$", listing, re.M), listing
    kept = own_wisp.run("image", "prune").stdout
    assert "Removed 0 images" in kept and "kept 2" in kept

    own_wisp.run("app", "stop", "images")
    # A stopped app's containers drain before its images stop being in use (a busy machine: seconds),
    # so a prune may find one of them still kept.
    outputs: list[str] = []

    def prune_all() -> bool:
        outputs.append(own_wisp.run("image", "prune").stdout)
        return "No images built yet" in own_wisp.run("image", "list").stdout

    wait_until(prune_all, timeout=60, interval=0.5, message="the stopped app's images to be pruned")
    pruned = "".join(outputs)
    assert all(key in pruned for key in keys.values()), pruned
    assert "Removed 2 images" in pruned or pruned.count("Removed 1 image (") == 2, pruned


FAILING = """
import wisp

stub = wisp.Stub("{name}")


@stub.webhook(image=wisp.Image.debian_slim({python}){steps})
def f():
    return "never"
"""


@pytest.mark.parametrize(
    ("python", "steps", "expected"),
    [
        ("", '.pip_install("wisp-no-such-package-xyz-0123")',
         ["Image build step `pip_install wisp-no-such-package-xyz-0123 (+ ", "wisp-no-such-package-xyz-0123 was not found"]),
        ("", '.apt_install("wisp-no-such-deb-xyz")',
         ["Image build step `apt_install wisp-no-such-deb-xyz` failed: wisp-no-such-deb-xyz is not installed on this "
          "machine", "cannot install system packages"]),
        ("", '.run_commands("echo this goes wrong; exit 7")',
         ["Image build step `run_commands: echo this goes wrong; exit 7` failed (exit 7):\nthis goes wrong"]),
        ('"3.99"', "", ["no Python 3.99 interpreter was found", "`uv python install 3.99`"]),
    ],
    ids=["package", "apt", "command", "python"],
)
def test_a_failed_build_names_the_step_and_its_output(wisp: Wisp, tmp_path: Path, request: pytest.FixtureRequest,
                                                      python: str, steps: str, expected: list[str]) -> None:
    script = tmp_path / "failing.py"
    script.write_text(FAILING.format(name=f"fail-{request.node.callspec.id}", python=python, steps=steps))
    proc = wisp.run("deploy", str(script), check=False)
    assert proc.returncode == 1
    for text in expected:
        assert text in proc.stderr, proc.stderr
    assert re.search(r"^  \w+ \[\d/\d\] FAILED in \d+\.\d\d s$", proc.stdout, re.M), proc.stdout
    assert "Deployed" not in proc.stdout
