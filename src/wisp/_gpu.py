"""The `gpu=` keyword's grammar (Modal's), pure and stdlib only: the SDK checks a value with it
when a function is decorated, the server reads the stored value with it.

`gpu=` is a string or a list of strings (fallbacks, in order of preference). A string is a
model, optionally followed by `:COUNT` (how many GPUs one container gets; 1 by default), and is
case-insensitive: "t4", "A100:2", "a100-80gb:4", "H100!" (an H100, never a newer stand-in),
"B200+" (a B200 or newer), "any" (whatever GPU the machine has). Modal's names are T4, L4, A10
(A10G), L40S, A100, A100-40GB, A100-80GB, RTX-PRO-6000, H100, H100!, H200, B200 and B200+; a
self-hosted machine may have others, so any other model name is taken as the words of a device's
name ("RTX-4090" matches "NVIDIA GeForce RTX 4090"). How names match devices is the server's
(`wisp.server.runtime.gpus`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_COUNT = 64  # GPUs one container may ask for
_NAME = re.compile(r"[A-Z0-9]+(?:-[A-Z0-9]+)*[!+]?")
MODAL_MODELS = ("T4", "L4", "A10", "A10G", "L40S", "A100", "A100-40GB", "A100-80GB", "RTX-PRO-6000", "H100",
                "H100!", "H200", "B200", "B200+", "ANY")


@dataclass(frozen=True)
class GpuOption:
    """One entry of `gpu=`: a model and how many of it one container gets."""

    model: str  # upper case, without its suffix: "T4", "A100-80GB", "ANY"
    count: int = 1
    exact: bool = False  # "H100!": this model only, never a newer stand-in
    newer: bool = False  # "B200+": this model or a newer one

    def __str__(self) -> str:
        suffix = "!" if self.exact else "+" if self.newer else ""
        return f"{self.model}{suffix}" + (f":{self.count}" if self.count != 1 else "")


GpuValue = str | tuple[str, ...] | None  # what FunctionSpec.gpu stores: canonical strings


def parse_option(text: str) -> GpuOption:
    """One `gpu=` string; ValueError saying what is wrong and what to write instead."""
    name, sep, count_text = text.strip().upper().partition(":")
    count = 1
    if sep:
        if not count_text.isdigit() or not 1 <= int(count_text) <= MAX_COUNT:
            raise ValueError(f"the GPU count in {text!r} must be a whole number from 1 to {MAX_COUNT}, "
                             f"as in {name or 'T4'}:2")
        count = int(count_text)
    if not _NAME.fullmatch(name):
        raise ValueError(f"{text!r} is not a GPU model: write a model name such as "
                         f"{', '.join(repr(m) for m in MODAL_MODELS[:6])} or 'any', optionally with ':COUNT'")
    return GpuOption(name.rstrip("!+"), count, exact=name.endswith("!"), newer=name.endswith("+"))


def parse(value: Any) -> tuple[GpuOption, ...]:
    """A `gpu=` value (None, a string, or a list of strings) as its options in order; () for none."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(i, str) for i in items):
        raise ValueError(f"gpu= takes a model name such as 'T4' or 'A100:2', or a list of them in order of "
                         f"preference such as ['H100', 'A100'], got {value!r}")
    return tuple(parse_option(i) for i in items)


def canonical(value: Any) -> GpuValue:
    """The value to store: each string in its canonical form ("a100-80gb:1" -> "A100-80GB"), a
    list as a tuple; raises ValueError like `parse`."""
    options = parse(value)
    if not options:
        return None
    if isinstance(value, str):
        return str(options[0])
    return tuple(str(o) for o in options)


def describe(value: GpuValue) -> str:
    """The value as a user wrote it: gpu='T4', gpu=['H100', 'A100']."""
    return f"gpu={list(value)!r}" if isinstance(value, tuple) else f"gpu={value!r}"


__all__ = ["MAX_COUNT", "MODAL_MODELS", "GpuOption", "GpuValue", "canonical", "describe", "parse", "parse_option"]
