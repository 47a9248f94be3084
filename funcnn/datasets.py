"""Old path of ``funcnn.data.generated``: the same module object, so every name works."""
import sys

from funcnn.data import generated as _module

sys.modules[__name__] = _module
