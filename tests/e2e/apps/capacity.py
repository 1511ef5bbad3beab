"""Reservations that fill a machine of WISP_CPU_LIMIT=1: two containers of `half` (or of `hold`,
which keeps them for a minute), none of `huge`."""
import os
import time

import wisp

stub = wisp.Stub("capacity")


@stub.webhook(cpu=0.5, container_idle_timeout=2)
def half(seconds: float = 1.0):
    time.sleep(seconds)
    return {"pid": os.getpid()}


@stub.webhook(cpu=0.5, container_idle_timeout=60)
def hold(seconds: float = 0.5):
    time.sleep(seconds)
    return {"pid": os.getpid()}


@stub.webhook(cpu=0.5, container_idle_timeout=60)
def other():
    return {"pid": os.getpid()}


@stub.webhook(cpu=4)
def huge():
    return {"never": "served"}
