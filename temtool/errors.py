"""Errors a user can act on. The CLI prints them in one line and exits with code 2."""


class TemtoolError(Exception):
    """Bad input: a file, folder or option the user can fix. The message says how."""
