"""One exception type for every mistake a user can make (bad flag, missing file, corrupt image).

Every command (main.py, tools.evaluate, tools.compare, ...) runs through run_command, which prints
it as a single line, ``error: <message>``, and exits with status 2; a traceback is shown only with
``--debug``. Raise it with a message that names the file or flag and what was expected.
"""
import argparse
import sys


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback.
    ``prefix`` and ``status``: how run_command reports it."""
    prefix = 'error: '
    status = 2


def run_command(run, argv=None):
    """``run(argv)`` -> its exit status (None: 0); a UserError becomes its one line on stderr and
    its status (2), or its traceback when argv holds --debug."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for stream in (sys.stdout, sys.stderr):     # a file name that is not UTF-8 prints escaped, never raises
        if hasattr(stream, 'reconfigure'):
            stream.reconfigure(errors='backslashreplace')
    try:
        return run(argv) or 0
    except UserError as exc:
        if '--debug' in argv:
            raise
        print(exc.prefix + str(exc), file=sys.stderr)
        return exc.status


def warn(message):
    """A one-line warning on stderr, in the style of the ``error: ...`` lines."""
    print('warning: %s' % message, file=sys.stderr, flush=True)


def first_line(exc):
    """The one line of an exception worth showing a user.

    MXNet's errors read ``Traceback (most recent call last): ... MXNetError: Check failed: ...``:
    their reason is the last line. Others: the first line, or the type's name when empty.
    """
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[-1] if lines[0].startswith('Traceback') else lines[0]
    for prefix in ('MXNetError: ', 'mxnet.base.MXNetError: '):
        if line.startswith(prefix):
            line = line[len(prefix):]
    return line[:300]


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one UserError line, like every other bad input (no usage dump).
    ``switches`` holds the dests of its store_true flags (write_config writes them bare).

    Every command spells its flags with underscores (``--data_dir``, as the official main.py); the
    hyphen spelling of a flag (``--data-dir``) is accepted as its alias, without doubling --help.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.switches = set()

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args([self._underscored(token) for token in args], namespace)

    def _underscored(self, token):
        """'--block-size[=N]' as '--block_size[=N]' when that is one of this parser's flags."""
        name, sep, value = token.partition('=')
        if not name.startswith('--') or '-' not in name[2:]:
            return token
        alias = '--' + name[2:].replace('-', '_')
        return alias + sep + value if alias in self._option_string_actions else token

    def error(self, message):
        raise UserError(message + ' (see --help)')
