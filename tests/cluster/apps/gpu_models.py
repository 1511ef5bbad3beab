"""GPU functions on a cluster with one T4 node (Ray's accelerator_type:T4): `t4` goes there,
`a100` has no node with its model."""
import os

import wisp

stub = wisp.Stub("gpu-models")


@stub.webhook(gpu="T4")
def t4():
    return {"node": os.environ.get("WISP_NODE"), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}


@stub.webhook(gpu="A100")
def a100():
    return {"never": "served"}
