"""Secrets (issue 10, point 5): `wisp secret create|list|delete`, named, inline and .env secrets in
the containers' environment, values kept 0600 and never printed, a missing secret failing a deploy
before anything changes."""
from __future__ import annotations

import json
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import WISP, Wisp, admin, get, start_wisp

pytestmark = pytest.mark.e2e
APP = Path(__file__).parent / "apps" / "secrets_app.py"
PASSWORD = "pw-Secret-4921"  # every value is distinctive so that a leak anywhere is found by grep
DOTENV = "dotenv-value-5531"
VALUES = (PASSWORD, "inline-token-77", DOTENV)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Wisp, Path]]:
    root = tmp_path_factory.mktemp("secrets")
    wisp = start_wisp(root / "home")
    src = root / "src"
    src.mkdir()
    shutil.copy(APP, src / APP.name)
    (src / ".env").write_text(f'# read by Secret.from_dotenv()\nDOTENV_KEY="{DOTENV}"\nexport SHARED=from-dotenv\n')
    yield wisp, src
    wisp.run("server", "stop", check=False)


def deploy(wisp: Wisp, src: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`wisp deploy` run from the script's folder, as a user does (from_dotenv() looks there)."""
    proc = subprocess.run([*WISP, "deploy", APP.name], cwd=src, env=wisp.env, capture_output=True, text=True,
                          timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_a_missing_secret_fails_the_deploy_naming_it_and_the_command_that_creates_it(home: tuple[Wisp, Path]) -> None:
    wisp, src = home
    proc = deploy(wisp, src, check=False)
    assert proc.returncode != 0
    assert "db-creds" in proc.stderr and "wisp secret create db-creds" in proc.stderr
    assert json.loads(admin(wisp, "/v1/apps")[1])["apps"] == []  # nothing was built, stored or started


def test_named_inline_and_dotenv_secrets_reach_the_containers_env(home: tuple[Wisp, Path]) -> None:
    wisp, src = home
    made = wisp.run("secret", "create", "db-creds", f"DB_PASSWORD={PASSWORD}", "SHARED=from-name")
    assert PASSWORD not in made.stdout + made.stderr
    assert "DB_PASSWORD" in made.stdout
    deploy(wisp, src)
    body = get(wisp.url("secrets--env")).json()
    # Later secrets override earlier ones: the .env file's SHARED wins over from_dict's and the named one's.
    assert body["web"] == {"DB_PASSWORD": PASSWORD, "API_TOKEN": "inline-token-77", "DOTENV_KEY": DOTENV,
                           "SHARED": "from-dotenv"}
    # A called function gets its own secrets only.
    assert body["backend"] == {"DB_PASSWORD": PASSWORD, "API_TOKEN": None, "DOTENV_KEY": None, "SHARED": "from-name"}
    assert get(wisp.url("secrets--plain")).json() == dict.fromkeys(("DB_PASSWORD", "API_TOKEN", "DOTENV_KEY", "SHARED"))


def test_values_are_never_printed_listed_or_logged_and_the_store_is_private(home: tuple[Wisp, Path]) -> None:
    wisp, src = home
    listed = wisp.run("secret", "list")
    assert "db-creds" in listed.stdout and "DB_PASSWORD" in listed.stdout and "created" in listed.stdout
    shown = [listed.stdout, wisp.run("app", "list").stdout, wisp.run("app", "logs", "secrets", check=False).stdout]
    for path in ("/v1/apps", "/v1/secrets"):
        status, body = admin(wisp, path)
        assert status == 200
        shown.append(body)
    for text in shown:
        assert not [value for value in VALUES if value in text], text
    state = wisp.home / "state.db"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    # Logs, stored specs, images: nothing but the database holds a value. (The user's own script, copied
    # for its containers, holds its from_dict values, as it does on their disk; the .env file is not copied.)
    own = {path.name for path in src.iterdir()} - {".env"}
    for path in wisp.home.rglob("*"):
        if path.is_file() and not path.name.startswith("state.db") and path.name not in own:
            data = path.read_bytes()
            assert not [value for value in VALUES if value.encode() in data], path


def test_create_refuses_to_overwrite_without_force_and_takes_a_dotenv_file(home: tuple[Wisp, Path],
                                                                          tmp_path: Path) -> None:
    wisp, _ = home
    again = wisp.run("secret", "create", "db-creds", "DB_PASSWORD=other", check=False)
    assert again.returncode != 0 and "--force" in again.stderr
    dotenv = tmp_path / "prod.env"
    dotenv.write_text("TOKEN_A=a-value\nTOKEN_B='b value'\n")
    wisp.run("secret", "create", "from-file", "--from-dotenv", str(dotenv))
    rows = {row["name"]: row for row in json.loads(admin(wisp, "/v1/secrets")[1])["secrets"]}
    assert rows["from-file"]["keys"] == ["TOKEN_A", "TOKEN_B"]
    bad = wisp.run("secret", "create", "bad", "NOEQUALS", check=False)
    assert bad.returncode != 0 and "KEY=VALUE" in bad.stderr


def test_force_replaces_values_for_the_next_deploy_and_delete_makes_it_missing(home: tuple[Wisp, Path]) -> None:
    wisp, src = home
    wisp.run("secret", "create", "db-creds", "DB_PASSWORD=rotated-1", "SHARED=x", "--force")
    assert get(wisp.url("secrets--env")).json()["web"]["DB_PASSWORD"] == PASSWORD  # running version keeps its values
    deploy(wisp, src)
    assert get(wisp.url("secrets--env")).json()["web"]["DB_PASSWORD"] == "rotated-1"
    wisp.run("secret", "delete", "db-creds")
    assert "db-creds" not in wisp.run("secret", "list").stdout
    proc = deploy(wisp, src, check=False)
    assert proc.returncode != 0 and "wisp secret create db-creds" in proc.stderr
    assert get(wisp.url("secrets--env")).json()["web"]["DB_PASSWORD"] == "rotated-1"  # the previous version serves
    missing = wisp.run("secret", "delete", "db-creds", check=False)
    assert missing.returncode != 0 and "wisp secret list" in missing.stderr


def test_a_restarted_server_restores_the_app_with_the_values_it_was_deployed_with(home: tuple[Wisp, Path]) -> None:
    wisp, _ = home
    wisp.run("server", "stop")
    wisp.run("server", "start")
    body = get(wisp.url("secrets--env")).json()
    assert body["web"]["DB_PASSWORD"] == "rotated-1" and body["web"]["DOTENV_KEY"] == DOTENV
    assert body["backend"]["DB_PASSWORD"] == "rotated-1"
