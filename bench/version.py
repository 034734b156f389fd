"""The package version (one home: the package, its CLI and every run's config read it here)."""

__version__ = "0.1.0"
