"""Old path of ``funcnn.app.config``: the same module object, so every name (and monkeypatching) works."""
import sys

from funcnn.app import config as _module

sys.modules[__name__] = _module
