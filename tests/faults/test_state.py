"""A damaged state store (issue 11, point 6) and old versions pruned (point 7).

Each test corrupts `state.db` (or an app's record) of a stopped server the way a crash, a full
disk or a mistaken command would, starts the server again and checks that nothing is lost
silently: a damaged record fails its app alone, an unreadable or empty database refuses to
start naming the backup to restore, and no process is left behind.
"""
from __future__ import annotations

import re
import shutil
import sqlite3
import stat
from pathlib import Path

import requests

from e2e.conftest import Wisp, get, start_wisp, wait_until

from .conftest import leftovers

SCRIPT = """
import wisp

stub = wisp.Stub("{name}")


@stub.webhook
def version():
    return {{"app": "{name}", "version": {version}}}
"""


def deploy(wisp: Wisp, folder: Path, name: str, version: int = 1) -> None:
    folder = folder / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.py").write_text(SCRIPT.format(name=name, version=version))
    wisp.run("deploy", str(folder / "app.py"))


def serves(wisp: Wisp, name: str, version: int = 1) -> bool:
    return bool(get(wisp.url(f"{name}--version")).json() == {"app": name, "version": version})


def sql(wisp: Wisp, statement: str) -> None:
    db = sqlite3.connect(wisp.home / "state.db")
    try:
        with db:
            db.execute(statement)
    finally:
        db.close()


def rows(wisp: Wisp, query: str) -> list[object]:
    db = sqlite3.connect(wisp.home / "state.db")
    try:
        return [row[0] for row in db.execute(query)]
    finally:
        db.close()


def folders(wisp: Wisp) -> list[str]:
    return sorted(p.name for p in (wisp.home / "apps" / "pruned").iterdir())


def failed_start(wisp: Wisp) -> str:
    """`wisp server start` on a damaged home: it must fail, say why in words, and leave nothing running."""
    proc = wisp.run("server", "start", check=False, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "Traceback" not in output, output
    wait_until(lambda: not leftovers(wisp.home), timeout=30, message=f"no process of {wisp.home} left")
    assert wisp.run("server", "status", check=False).returncode == 1
    return output


def test_a_damaged_record_fails_only_its_app(own_wisp: Wisp, tmp_path: Path) -> None:
    for name in ("good", "badjson", "invalid", "nofiles", "refolded"):
        deploy(own_wisp, tmp_path, name)
    own_wisp.run("server", "stop")
    sql(own_wisp, "UPDATE versions SET spec = '{not json' WHERE app_id = 'badjson'")
    sql(own_wisp, """UPDATE versions SET spec = '{"name": "invalid"}' WHERE app_id = 'invalid'""")
    # A lost folder is unpacked again from the store's copy of the deploy (issue 14); without that copy
    # (a version saved before wisp kept one), the app fails.
    sql(own_wisp, "UPDATE versions SET bundle = NULL WHERE app_id = 'nofiles'")
    for name in ("nofiles", "refolded"):
        shutil.rmtree(own_wisp.home / "apps" / name / "v1")

    own_wisp.run("server", "start")
    assert serves(own_wisp, "good")
    assert serves(own_wisp, "refolded") and (own_wisp.home / "apps" / "refolded" / "v1" / "app.py").is_file()
    listing = own_wisp.run("app", "list").stdout
    for name, reason in (("badjson", "not valid JSON"), ("invalid", "does not validate"),
                         ("nofiles", "files folder of its version 1")):
        assert re.search(rf"^{name}  failed  deploy  version 1\n  FAILED: could not restore app {name}: .*{reason}",
                         listing, re.M), listing
        assert f"could not restore app {name}" in (own_wisp.home / "server.log").read_text()
        assert requests.get(own_wisp.url(f"{name}--version"), timeout=30).status_code == 404
    assert re.search(r"^good  running", listing, re.M), listing

    deploy(own_wisp, tmp_path, "badjson", version=2)  # a new deploy mends the app
    assert serves(own_wisp, "badjson", 2)
    assert not re.search(r"^badjson  failed", own_wisp.run("app", "list").stdout, re.M)


def test_an_unreadable_database_refuses_to_start_naming_the_backup(own_wisp: Wisp, tmp_path: Path) -> None:
    home = own_wisp.home.resolve()  # the server names the real path, not the link
    deploy(own_wisp, tmp_path, "kept")
    own_wisp.run("server", "stop")
    own_wisp.run("server", "start")  # a start with apps to keep backs them up
    backups = sorted((home / "backups").glob("state-*.db"))
    assert len(backups) == 1 and stat.S_IMODE(backups[0].stat().st_mode) == 0o600
    own_wisp.run("server", "stop")

    db = home / "state.db"
    db.write_bytes(b"\x89 garbage, not a database " * 500)
    output = failed_start(own_wisp)
    assert str(db) in output and "cannot be used: file is not a database" in output, output
    assert f"`wisp server restore {backups[0]}`" in output, output

    restored = own_wisp.run("server", "restore").stdout  # the newest backup by default
    assert f"from {backups[0]}" in restored and "state.db.replaced-" in restored, restored
    assert len(list(home.glob("state.db.replaced-*"))) == 1  # the damaged file is kept aside
    own_wisp.run("server", "start")
    assert serves(own_wisp, "kept")


def test_an_empty_database_beside_app_folders_refuses_to_start(own_wisp: Wisp, tmp_path: Path) -> None:
    home = own_wisp.home.resolve()  # the server names the real path, not the link
    deploy(own_wisp, tmp_path, "remembered")
    own_wisp.run("server", "stop")
    db = home / "state.db"
    good = tmp_path / "good.db"
    shutil.copy(db, good)

    def empty(path: Path) -> None:
        path.write_bytes(b"")

    def schema_less(path: Path) -> None:
        path.unlink()
        sqlite3.connect(path).execute("VACUUM").connection.close()

    for damage, word in ((empty, "empty"), (schema_less, "empty"), (Path.unlink, "missing")):
        damage(db)
        output = failed_start(own_wisp)
        assert f"{db} is {word}" in output and "holds the code of 1 app(s) (remembered)" in output, output
        assert "no backup" in output and re.search(rf"`mkdir \S+ && mv .*{home / 'apps'} ", output), output
        shutil.copy(good, db)  # nothing was written over: the good file serves again
        assert not (home / "backups").exists()

    own_wisp.run("server", "start")
    assert serves(own_wisp, "remembered")


def test_backup_while_running_and_restore(own_wisp: Wisp, tmp_path: Path) -> None:
    home = own_wisp.home.resolve()  # the server names the real path, not the link
    deploy(own_wisp, tmp_path, "before")
    printed = own_wisp.run("server", "backup").stdout
    backup = Path(printed.split(" to ")[-1].strip())
    assert backup.parent == home / "backups" and backup.is_file(), printed
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    named = own_wisp.run("server", "backup", str(tmp_path / "named.db")).stdout
    assert str(tmp_path / "named.db") in named and (tmp_path / "named.db").is_file()
    assert "exists already" in own_wisp.run("server", "backup", str(tmp_path / "named.db"), check=False).stderr
    deploy(own_wisp, tmp_path, "after")  # not in the backup

    assert "Stop it first" in own_wisp.run("server", "restore", str(backup), check=False).stderr
    own_wisp.run("server", "stop")
    own_wisp.run("server", "restore", str(backup))
    own_wisp.run("server", "start")
    assert serves(own_wisp, "before")
    assert requests.get(own_wisp.url("after--version"), timeout=30).status_code == 404
    assert not re.search(r"^after ", own_wisp.run("app", "list").stdout, re.M)


def test_old_versions_are_pruned_keeping_the_last_n(tmp_path: Path) -> None:
    wisp = start_wisp(tmp_path / "home", {"WISP_KEEP_VERSIONS": "2"})
    try:
        for version in range(1, 6):
            deploy(wisp, tmp_path, "pruned", version)
            assert serves(wisp, "pruned", version)
        # v3 may still be draining after the last deploy: it goes once it has drained
        wait_until(lambda: folders(wisp) == ["v4", "v5"], timeout=60, message=f"v4 and v5 only: {folders(wisp)}")
        for table in ("versions", "version_secrets"):
            assert rows(wisp, f"SELECT version FROM {table} WHERE app_id = 'pruned' ORDER BY 1") == [4, 5]
        assert "pruned version(s) 1" in (wisp.home / "logs" / "pruned.log").read_text()
        wisp.run("server", "stop")
        wisp.run("server", "start")
        assert serves(wisp, "pruned", 5)
    finally:
        wisp.run("server", "stop", check=False)
