"""The application layer: commands built on the library (what the CLI runs).

Modules here may print and write files; the library (``funcnn.*`` outside
``funcnn.app`` and ``funcnn.cli``) does neither.
"""
