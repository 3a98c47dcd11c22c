"""Errors that a user can cause and fix.

A `UserError` is a mistake in what the user gave (a path, an option, a file): the CLI prints its message as one
line and exits with code 2. Anything else that is raised is a bug in ddpmkit and may show a traceback.
"""


class UserError(Exception):
    """A mistake the user can fix; the message is one line that names the thing and the fix."""


class DataError(UserError):
    """Bad input data: a missing path, a corrupt image, an array of the wrong shape."""


class ConfigError(UserError):
    """An impossible or unknown configuration value."""


class CheckpointError(UserError):
    """A checkpoint that is missing, incomplete, corrupt, unsafe or does not fit the model."""
