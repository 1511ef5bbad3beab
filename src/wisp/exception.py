"""The errors wisp raises, under Modal's names (`from modal.exception import ...` maps here)."""
from __future__ import annotations


class Error(Exception):
    """Base of wisp's own errors."""


class ExecutionError(Error):
    """A call could not run to its end: its container crashed, failed to start, or no app serves it."""


class RemoteError(Error):
    """A function raised an exception that could not be sent back as itself (it would not pickle)."""


class FunctionTimeoutError(Error, TimeoutError):
    """A call ran past its function's `timeout`."""


class InputCancellation(Error):
    """The call was cancelled (`FunctionCall.cancel()`) before it finished."""


class InvalidError(Error):
    """Something given to wisp cannot be used: a script that does not import, a bad argument."""


class NotFoundError(Error):
    """No such call, function or app (or not one the caller may see)."""


class AuthError(Error):
    """The server refused the caller's credentials."""


__all__ = [
    "AuthError", "Error", "ExecutionError", "FunctionTimeoutError", "InputCancellation", "NotFoundError", "RemoteError",
]
