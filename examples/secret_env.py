"""A web endpoint that reads a secret from its environment.

    wisp secret create greeting GREETING=Bonjour
    wisp serve examples/secret_env.py
    curl 'http://127.0.0.1:8400/secret-env--greet-dev/?name=Ada'   # "Bonjour, Ada!"

The value lives in the server's state (mode 0600) and reaches only this function's containers, as
the environment variable GREETING. `wisp secret list` shows names and keys, never values.
Values can also come from the script (`wisp.Secret.from_dict({...})`) or a `.env` file
(`wisp.Secret.from_dotenv()`).
"""
import os

import wisp

app = wisp.App("secret-env")


@app.function(secrets=[wisp.Secret.from_name("greeting", required_keys=["GREETING"])])
@wisp.fastapi_endpoint()
def greet(name: str = "world") -> str:
    return f"{os.environ['GREETING']}, {name}!"
