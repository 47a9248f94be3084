"""The application layer: commands built on the library (what the ``funcnn`` command runs and serves).

Modules here may print and write files; the library (``funcnn.*`` outside
``funcnn.app`` and ``funcnn.cli``) does neither. Each command module exposes
``register(sub)``, which adds its subcommand to the CLI's subparsers;
``funcnn.cli`` only calls them.
"""
