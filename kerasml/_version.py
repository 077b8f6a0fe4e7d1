"""The kerasml version (layer L0: every layer may read it without importing the package root)."""

__version__ = "0.1.0"
