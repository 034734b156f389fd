"""Errors the CLI reports as one clear line (no traceback) with a non-zero exit."""


class UsageError(Exception):
    """Bad input from the user: unknown names, invalid values, missing or corrupt files."""
