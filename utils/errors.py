"""One exception type for every mistake a user can make (bad flag, missing file, corrupt image).

main.py prints it as a single line, ``error: <message>``, and exits with status 2; a traceback is
shown only with ``--debug``. Raise it with a message that names the file or flag and what was expected.
"""


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""
