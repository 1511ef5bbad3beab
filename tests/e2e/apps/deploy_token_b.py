"""An app for tests/e2e/test_deploy_tokens.py: deploy tokens are scoped to one app name."""
import wisp

app = wisp.App("tok-b")


@app.function()
@wisp.fastapi_endpoint()
def hello() -> dict[str, str]:
    return {"app": "tok-b"}
