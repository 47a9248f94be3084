"""``python -m funcnn`` is the ``funcnn`` command."""
import sys

from funcnn.app.cli import main

sys.exit(main())
