"""The application layer: what the ``funcnn`` command runs, serves and draws.

``config`` (typed TOML configs), ``experiment`` (a config's data, network and
training, run end to end), ``cli`` (the ``funcnn`` command), ``plots``
(matplotlib figures), and the commands ``playground``, ``mistakes``,
``explain`` and ``sweep``. Modules here may print and write files; the library
(every other ``funcnn`` module) does neither and never imports this package
(``tests/test_layout.py`` checks that). Each command module exposes
``register(sub)``, which adds its subcommand to the CLI's subparsers;
``funcnn.app.cli`` only calls them. ``funcnn.config``, ``funcnn.experiment``,
``funcnn.cli`` and ``funcnn.plots`` still name these modules.
"""
