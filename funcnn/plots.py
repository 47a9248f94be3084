"""Old path of ``funcnn.app.plots``: the same module object, so every name (and monkeypatching) works."""
import sys

from funcnn.app import plots as _module

sys.modules[__name__] = _module
