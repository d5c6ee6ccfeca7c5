"""temtool's version: the one place it is written (setup.cfg reads it; bundles record it)."""

__version__ = "0.1.0"
