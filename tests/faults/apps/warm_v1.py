"""App `fault-warm`, version 1: a warm pool whose enter hook works."""
import wisp

app = wisp.App("fault-warm")


@app.cls(min_containers=1, startup_timeout=20)
class Model:
    @wisp.enter()
    def load(self) -> None:
        self.tag = "v1"

    @wisp.fastapi_endpoint()
    def version(self) -> str:
        return self.tag
