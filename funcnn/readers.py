"""Old path of ``funcnn.data.readers``: the same module object, so every name works."""
import sys

from funcnn.data import readers as _module

sys.modules[__name__] = _module
