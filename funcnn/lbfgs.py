"""Old path of ``funcnn.optim.lbfgs``: the same module object, so every name (and monkeypatching) works."""
import sys

from funcnn.optim import lbfgs as _module

sys.modules[__name__] = _module
