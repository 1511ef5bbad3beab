"""Start a long job from one request, fetch its result from a later one (the job-queue pattern).

    wisp deploy examples/spawn_poll.py
    curl -X POST -H 'Content-Type: application/json' -d '{"text": "hello"}' http://127.0.0.1:8400/spawn-poll--submit/
        # {"call_id":"fc-..."}
    curl 'http://127.0.0.1:8400/spawn-poll--result/?call_id=fc-...'
        # 202 {"status":"pending"} while it runs, then 200 {"result":"HELLO"}

A spawned call is kept by the server: its id works across redeploys and server restarts.
"""
import time

import wisp
from wisp.functions import FunctionCall

app = wisp.App("spawn-poll")


@app.function(timeout=600)
def shout(text: str, seconds: float = 2.0) -> str:
    time.sleep(seconds)  # stands in for real work: a model, a render, a crawl
    return text.upper()


@app.function()
@wisp.fastapi_endpoint(method="POST")
def submit(job: dict) -> dict:
    call = shout.spawn(job["text"], job.get("seconds", 2.0))
    return {"call_id": call.object_id}


@app.function()
@wisp.fastapi_endpoint()
def result(call_id: str):
    from fastapi.responses import JSONResponse

    try:
        return {"result": FunctionCall.from_id(call_id).get(timeout=0)}
    except TimeoutError:
        return JSONResponse({"status": "pending"}, status_code=202)
