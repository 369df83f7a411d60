"""One exception type for bad inputs: its message is one line that names the file and the fix."""


class InputError(Exception):
    """A missing, malformed or mismatched input. ``str(error)`` is shown to the user as is."""
