"""Old path of ``funcnn.optim.newton`` (Hessian-free): the same module object, so every name works."""
import sys

from funcnn.optim import newton as _module

sys.modules[__name__] = _module
