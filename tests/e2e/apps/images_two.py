"""Two functions with two images (issue 4): each imports only its own package; the second also
runs commands at build time, sets env and workdir, and mounts a local file from ../shared/."""
import os
import sys
from pathlib import Path

import wisp

stub = wisp.Stub("images")

six_image = wisp.Image.debian_slim().pip_install("six")
jmespath_image = (
    wisp.Image.debian_slim()
    .pip_install("jmespath")
    .run_commands("echo made at build > made.txt", "python -c 'import jmespath' && echo $VIRTUAL_ENV > venv.txt")
    .env({"GREETING": "hello"})
    .workdir("work")
    .add_local_file("../shared/data.txt", "data.txt")
)


def importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


@stub.webhook(image=six_image)
def six_fn():
    return {"six": importable("six"), "jmespath": importable("jmespath")}


@stub.webhook(image=jmespath_image)
def jmespath_fn():
    return {
        "six": importable("six"),
        "jmespath": importable("jmespath"),
        "cwd": os.getcwd(),
        "data": Path("data.txt").read_text(),
        "made": (Path(sys.prefix) / "made.txt").read_text(),
        "venv": (Path(sys.prefix) / "venv.txt").read_text().strip(),
        "prefix": sys.prefix,
        "greeting": os.environ.get("GREETING"),
    }
