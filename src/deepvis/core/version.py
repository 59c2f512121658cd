"""The package version, in one place (the CLI, store provenance and the export read it)."""

__version__ = "0.1.0"
