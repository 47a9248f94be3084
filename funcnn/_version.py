"""funcnn's version, in a module of its own: checkpoints record it without importing the application layer."""
__version__ = "0.2.0"
