"""Deploy bundles: the member rule as a table, then real tar.gz files checked and unpacked."""
from __future__ import annotations

import base64
import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from wisp._session.package import pack_files
from wisp.server.bundles import BundleLimits, BundleRefused, check_bundle, extract_bundle, member_refusal
from wisp.server.runtime.cluster.agent import unpack

MB = 1024 * 1024


@pytest.mark.parametrize(("name", "kind", "link", "refused"), [
    ("app.py", "file", "", None),
    ("./app.py", "file", "", None),
    ("pkg/sub/mod.py", "file", "", None),
    ("pkg", "dir", "", None),
    ("a..b.py", "file", "", None),  # dots in a name are no `..` component
    ("../evil.py", "file", "", "`..`"),
    ("pkg/../../evil.py", "file", "", "`..`"),
    ("/etc/cron.d/x", "file", "", "absolute name"),
    ("link", "symlink", "app.py", None),
    ("pkg/link", "symlink", "../app.py", None),  # up one folder, still inside
    ("pkg/link", "symlink", "../../etc/passwd", "outside the bundle"),
    ("link", "symlink", "..", "outside the bundle"),
    ("link", "symlink", "/etc/passwd", "absolute path"),
    ("hard", "hardlink", "app.py", None),
    ("hard", "hardlink", "/etc/shadow", "outside the bundle"),
    ("hard", "hardlink", "../x", "outside the bundle"),
    ("dev", "device file", "", "device file"),
    ("pipe", "FIFO", "", "FIFO"),
])
def test_member_rule(name: str, kind: str, link: str, refused: str | None) -> None:
    why = member_refusal(name, kind, link)
    if refused is None:
        assert why is None
    else:
        assert why is not None and refused in why


def tar_gz(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


GOOD = (member("app.py"), b"print('hi')\n")


@pytest.mark.parametrize(("bad", "said"), [
    ((member("../../outside.py"), b"x"), "`..`"),
    ((member("/tmp/absolute.py"), b"x"), "absolute name"),
    ((member("link", tarfile.SYMTYPE, "../../.."), b""), "symlink"),
    ((member("link", tarfile.SYMTYPE, "/etc/passwd"), b""), "symlink to the absolute path"),
    ((member("hard", tarfile.LNKTYPE, "/etc/passwd"), b""), "hard link"),
    ((member("null", tarfile.CHRTYPE), b""), "device file"),
    ((member("disk", tarfile.BLKTYPE), b""), "device file"),
    ((member("pipe", tarfile.FIFOTYPE), b""), "FIFO"),
])
def test_a_bundle_reaching_outside_is_refused_whole_and_nothing_is_written(
        tmp_path: Path, bad: tuple[tarfile.TarInfo, bytes], said: str) -> None:
    data = tar_gz(GOOD, bad)
    with pytest.raises(BundleRefused) as refused:
        extract_bundle(data, tmp_path, BundleLimits())
    assert refused.value.status == 400
    assert said in refused.value.message and bad[0].name in refused.value.message
    assert "deploy again" in refused.value.message  # says what to do
    assert list(tmp_path.iterdir()) == []


def test_a_good_bundle_with_links_inside_unpacks(tmp_path: Path) -> None:
    data = tar_gz(GOOD, (member("pkg", tarfile.DIRTYPE), b""), (member("pkg/mod.py"), b"X = 1\n"),
                  (member("pkg/alias.py", tarfile.SYMTYPE, "mod.py"), b""),
                  (member("copy.py", tarfile.LNKTYPE, "app.py"), b""))
    extract_bundle(data, tmp_path, BundleLimits())
    assert (tmp_path / "app.py").read_text() == "print('hi')\n"
    assert (tmp_path / "pkg" / "alias.py").read_text() == "X = 1\n"
    assert (tmp_path / "copy.py").read_text() == "print('hi')\n"


def test_sizes_are_capped_compressed_and_unpacked(tmp_path: Path) -> None:
    zeros = tar_gz((member("zeros.bin"), bytes(3 * MB)))  # compresses to a few KiB: a small gzip bomb
    assert len(zeros) < MB
    with pytest.raises(BundleRefused) as refused:
        check_bundle(zeros, BundleLimits(compressed=MB, unpacked=2 * MB))
    assert refused.value.status == 413 and "WISP_MAX_UNPACKED_MB" in refused.value.message
    check_bundle(zeros, BundleLimits(compressed=MB, unpacked=4 * MB))  # within both: fine

    noise = tar_gz((member("noise.bin"), os.urandom(2 * MB)))
    with pytest.raises(BundleRefused) as refused:
        check_bundle(noise, BundleLimits(compressed=MB, unpacked=8 * MB))
    assert refused.value.status == 413 and "WISP_MAX_BUNDLE_MB" in refused.value.message
    check_bundle(noise, None)  # no size limits: only the members are checked


def test_many_empty_files_count_against_the_unpacked_size() -> None:
    data = tar_gz(*((member(f"f{i}"), b"") for i in range(3000)))  # 512-byte headers: 1.5 MiB unpacked
    with pytest.raises(BundleRefused, match="WISP_MAX_UNPACKED_MB"):
        check_bundle(data, BundleLimits(compressed=MB, unpacked=MB))


@pytest.mark.parametrize("data", [b"", b"not a tarball", gzip.compress(b"not a tar inside"), tar_gz(GOOD)[:-40]],
                         ids=["empty", "not-gzip", "gzip-not-tar", "cut-short"])  # gzip's bytes hold the time
def test_what_is_not_a_tar_gz_is_a_400(data: bytes) -> None:
    with pytest.raises(BundleRefused) as refused:
        check_bundle(data, BundleLimits())
    assert refused.value.status == 400 and "not a readable tar.gz" in refused.value.message


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, BundleLimits(256 * MB, 1024 * MB)),
    ({"WISP_MAX_BUNDLE_MB": "8", "WISP_MAX_UNPACKED_MB": " 16 "}, BundleLimits(8 * MB, 16 * MB)),
    ({"WISP_MAX_BUNDLE_MB": ""}, BundleLimits(256 * MB, 1024 * MB)),
    ({"WISP_MAX_BUNDLE_MB": "0"}, "WISP_MAX_BUNDLE_MB='0'"),
    ({"WISP_MAX_UNPACKED_MB": "1.5"}, "WISP_MAX_UNPACKED_MB='1.5'"),
])
def test_limits_from_the_environment(environ: dict[str, str], expected: BundleLimits | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            BundleLimits.from_env(environ)
    else:
        assert BundleLimits.from_env(environ) == expected


def test_wisp_deploy_sends_a_symlinked_file_as_its_contents(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "shared.py").write_text("SHARED = 1\n")
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.py").write_text("import shared\n")
    (app / "shared.py").symlink_to(tmp_path / "elsewhere" / "shared.py")
    data = base64.b64decode(pack_files(app))
    out = tmp_path / "out"
    out.mkdir()
    extract_bundle(data, out, BundleLimits())
    assert not (out / "shared.py").is_symlink() and (out / "shared.py").read_text() == "SHARED = 1\n"


def test_a_ray_node_refuses_a_bundle_reaching_outside_and_leaves_nothing(tmp_path: Path) -> None:
    bad = tar_gz(GOOD, (member("escape", tarfile.SYMTYPE, "../../../etc"), b""))
    with pytest.raises(BundleRefused, match="symlink"):
        unpack(bad, "d" * 64, tmp_path / "versions")
    assert list((tmp_path / "versions").iterdir()) == []
    good = unpack(tar_gz(GOOD), "e" * 64, tmp_path / "versions")
    assert (good / "app.py").read_text() == "print('hi')\n"
