"""`retries=`: how often, and after what delay, a failed call runs again. Pure."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Retries:
    """Modal's retry policy: `retries=wisp.Retries(max_retries=3, backoff_coefficient=2.0)`.

    The n-th retry waits `initial_delay * backoff_coefficient ** (n - 1)` seconds, at most
    `max_delay`. A plain `retries=N` is `Retries(max_retries=N, backoff_coefficient=1.0)`.
    """

    max_retries: int
    backoff_coefficient: float = 2.0
    initial_delay: float = 1.0
    max_delay: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or not 0 <= self.max_retries <= 10:
            raise ValueError(f"Retries: `max_retries` must be a whole number from 0 to 10, got {self.max_retries!r}.")
        if not 1.0 <= self.backoff_coefficient <= 10.0:
            raise ValueError(f"Retries: `backoff_coefficient` must be from 1.0 to 10.0, got {self.backoff_coefficient!r}.")
        if not 0.0 <= self.initial_delay <= 60.0 or not 1.0 <= self.max_delay <= 60.0:
            raise ValueError("Retries: `initial_delay` must be 0-60 s and `max_delay` 1-60 s.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def policy(value: Any) -> dict[str, Any] | None:
    """The spec's form of a `retries=` keyword (an int, a Retries, or None)."""
    if value is None:
        return None
    if isinstance(value, Retries):
        return value.to_dict()
    if isinstance(value, dict):  # read back from a spec
        return Retries(**value).to_dict()
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`retries` must be a whole number or a wisp.Retries(...), got {value!r}.")
    return Retries(max_retries=value, backoff_coefficient=1.0).to_dict()


def delay(retries: dict[str, Any] | None, attempt: int) -> float | None:
    """Seconds before running again after `attempt` failed runs (1 = the first), or None when
    the policy allows no more."""
    if not retries or attempt > retries["max_retries"]:
        return None
    seconds = retries["initial_delay"] * retries["backoff_coefficient"] ** (attempt - 1)
    return float(min(seconds, retries["max_delay"]))
