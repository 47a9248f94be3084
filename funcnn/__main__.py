"""``python -m funcnn`` is the ``funcnn`` command."""
import sys

from funcnn.cli import main

sys.exit(main())
