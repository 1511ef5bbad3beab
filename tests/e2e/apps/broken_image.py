import wisp

stub = wisp.Stub("behaviours")
image = wisp.Image.debian_slim().pip_install("wisp-no-such-package-xyz-0123")


@stub.webhook(image=image)
def pid():
    return {"pid": 0}
