"""Modal's keywords that wisp takes without a field of its own: which ones it honours as they
are, and which ones it refuses, saying why and what to do. Pure tables, read by `_app.py`.

A keyword is refused only when it asks for something (a value other than None, False or empty):
`region=None` or `volumes={}` in a Modal script mean nothing and pass.
"""
from __future__ import annotations

from typing import Any

# keyword -> why it is honoured as it stands (README's Modal compatibility table says the same)
NO_OPS: dict[str, str] = {
    "serialized": "the container imports the script either way",
    "include_source": "the script's folder is always shipped with the app",
    "nonpreemptible": "containers on this machine are never preempted",
    "enable_memory_snapshot": "containers are forked from a zygote that has imported the script: wisp's snapshot",
    "checkpointing_enabled": "containers are forked from a zygote that has imported the script: wisp's snapshot",
    "allow_cross_region_volumes": "there is one region, this machine",
    "wait_for_response": "requests always wait for the response (and past 150 s, follow the redirect chain)",
}

# keyword -> (why wisp cannot honour it, what to do instead)
REFUSED: dict[str, tuple[str, str]] = {
    "region": ("wisp runs containers on this machine, which has no region", "drop `region=`"),
    "routing_region": ("wisp runs containers on this machine, which has no region", "drop `routing_region=`"),
    "cloud": ("wisp runs containers on this machine, not in a cloud", "drop `cloud=`"),
    "schedule": ("wisp has no scheduler for functions yet",
                 "call the function from cron or a systemd timer with `wisp run script.py::fn`"),
    "volumes": ("wisp has no volumes yet", "ship files with `Image.add_local_dir(...)`, or read a host path"),
    "network_file_systems": ("wisp has no network file systems", "read a host path, or use `Image.add_local_dir`"),
    "cloud_bucket_mounts": ("wisp cannot mount cloud buckets", "read the bucket with its client library"),
    "mounts": ("`mounts=` is Modal's old form of local files",
               "use `image.add_local_dir(...)` / `.add_local_python_source(...)`"),
    "proxy": ("wisp has no outbound proxies", "drop `proxy=`"),
    "i6pn": ("wisp has no private container network", "call the other function with `.remote()`"),
    "block_network": ("wisp has the opposite default: a sandboxed container has no network unless its "
                      "function asks with `network=`",
                      "drop `block_network=` and run the server with `--runtime sandbox` (containers of the zygote "
                      "runtime share the server's network)"),
    "restrict_modal_access": ("this wisp's containers are not yet isolated from the server's environment",
                              "drop `restrict_modal_access=` until sandboxed containers land"),
    "interactive": ("containers have no terminal", "use `wisp app logs -f`"),
    "experimental_options": ("wisp has no experimental options", "drop `experimental_options=`"),
    "custom_domains": ("this wisp routes by label only", "use `label=` and point your domain at `<label>.<domain>`"),
    "_experimental_scheduler_placement": ("there is one machine to place on", "drop it"),
    "_experimental_gpus": ("wisp takes GPUs from `gpu=` only", "use `gpu=` (a list gives fallbacks)"),
    "_experimental_proxy_ip": ("wisp has no outbound proxies", "drop it"),
    "_experimental_custom_scaling_factor": ("wisp's autoscaler has no scaling factor",
                                            "use `@wisp.concurrent(max_inputs=..., target_inputs=...)`"),
    "_experimental_enable_gpu_snapshot": ("wisp does not snapshot GPU memory", "drop it"),
    "_experimental_boost": ("there is nothing to boost on this machine", "drop it"),
    "_allow_background_volume_commits": ("wisp has no volumes yet", "drop it"),
    "_experimental_restrict_output": ("wisp always returns results with cloudpickle", "drop it"),
}

WEB_KEYWORDS = ("requires_proxy_auth", "custom_domains", "wait_for_response")


def asks_for_something(value: Any) -> bool:
    return not (value is None or value is False or (hasattr(value, "__len__") and len(value) == 0))


def refusal(where: str, key: str, value: Any) -> ValueError | None:
    """The error for a keyword this wisp cannot honour with this value, or None."""
    if key == "wait_for_response":
        if value is False:
            return ValueError(f"{where}: `wait_for_response=False` (answer with a redirect at once) is not supported; "
                              "the gateway answers long calls with redirects after 150 s by itself. Drop it.")
        return None
    if key == "include_source" and value is False:
        return ValueError(f"{where}: `include_source=False` cannot be honoured: containers import the shipped "
                          "script. Drop it.")
    reason = REFUSED.get(key)
    if reason is None or not asks_for_something(value):
        return None
    why, instead = reason
    return ValueError(f"{where}: `{key}={value!r}` cannot be honoured: {why}. Instead: {instead}.")
