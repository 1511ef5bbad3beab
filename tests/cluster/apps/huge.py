"""A function that reserves more than any node of the test cluster has (1 CPU each)."""
import wisp

stub = wisp.Stub("huge")


@stub.webhook(cpu=4)
def big():
    return {"never": "served"}
