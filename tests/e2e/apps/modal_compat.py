# Modal scripts import FunctionCall from `modal.functions`; here that is `wisp.functions`.
from wisp.functions import FunctionCall  # noqa: F401
