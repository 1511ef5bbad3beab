"""Secrets, written in Modal's style: named, inline and from a .env file, on web and called functions."""
import os

import wisp as modal

app = modal.App("secrets")
KEYS = ("DB_PASSWORD", "API_TOKEN", "DOTENV_KEY", "SHARED")


def visible() -> dict[str, str | None]:
    return {key: os.environ.get(key) for key in KEYS}


@app.function(secrets=[modal.Secret.from_name("db-creds")])
def backend() -> dict[str, str | None]:
    return visible()


@app.function(secrets=[modal.Secret.from_name("db-creds", required_keys=["DB_PASSWORD"]),
                       modal.Secret.from_dict({"API_TOKEN": "inline-token-77", "SHARED": "from-dict"}),
                       modal.Secret.from_dotenv()])
@modal.fastapi_endpoint()
def env() -> dict[str, object]:
    return {"web": visible(), "backend": backend.remote()}


@app.function()
@modal.fastapi_endpoint()
def plain() -> dict[str, str | None]:
    return visible()
