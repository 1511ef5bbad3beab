"""App `fault-warm`, version 2: its enter hook raises, so no container of the warm pool is ready."""
import wisp

app = wisp.App("fault-warm")


@app.cls(min_containers=1, startup_timeout=20)
class Model:
    @wisp.enter()
    def load(self) -> None:
        raise RuntimeError("MODEL_PATH is not set on this server")

    @wisp.fastapi_endpoint()
    def version(self) -> str:
        return "v2"
