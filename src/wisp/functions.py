"""`from wisp.functions import FunctionCall` (Modal's `modal.functions` path)."""
from ._functions import FunctionCall

__all__ = ["FunctionCall"]
