"""Old path of ``funcnn.optim.schedules``: the same module object, so every name (and monkeypatching) works."""
import sys

from funcnn.optim import schedules as _module

sys.modules[__name__] = _module
