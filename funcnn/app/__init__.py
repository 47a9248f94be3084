"""funcnn's application layer: what the ``funcnn`` command serves and prints beside training.

Each module here exposes ``register(sub)``, which adds its subcommand to the
CLI's subparsers; ``funcnn.cli`` only calls them. The library modules
(``funcnn.*``) never print; these may.
"""
