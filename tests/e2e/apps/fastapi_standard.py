"""Modal's docs build every web endpoint's image with `fastapi[standard]`."""
import wisp as modal

app = modal.App("fastapi-standard")
image = modal.Image.debian_slim().pip_install("fastapi[standard]")


@app.function(image=image)
@modal.fastapi_endpoint()
def hello(name: str = "world") -> dict:
    return {"hello": name}
