"""Old path of ``funcnn.app.cli``: the same module object, so every name (and monkeypatching) works."""
import sys

from funcnn.app import cli as _module

sys.modules[__name__] = _module
