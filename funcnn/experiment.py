"""Old path of ``funcnn.app.experiment``: the same module object, so every name (and monkeypatching) works."""
import sys

from funcnn.app import experiment as _module

sys.modules[__name__] = _module
