"""Files written so that a crash, a kill or a full disk leaves the old file or the new one under the
final name, never a part of one: written to a temporary name beside it, fsynced, renamed (rename is
atomic within a folder), then the folder fsynced so that the rename itself survives a power cut.

Every writer of a result the user keeps goes through here: parameters and checkpoints'
parameter files, args.txt, saved embeddings, exports, converted weights, manifests.
"""
import os
from contextlib import contextmanager


def fsync_path(path):
    """fsync a file or a folder by its name."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_name(path):
    """A hidden name beside ``path``, unique to this process, ending as ``path`` ends (np.save and
    mx.nd.save keep a name as given; net.export(PREFIX) writes PREFIX-symbol.json, so the temporary
    names of PREFIX-symbol.json and PREFIX-0000.params share the prefix temporary_name(PREFIX))."""
    folder, name = os.path.split(path)
    return os.path.join(folder, '.tmp-%d-%s' % (os.getpid(), name))


@contextmanager
def atomic_paths(*paths):
    """Temporary names for ``paths`` (one name, or a list for several) to write in the block. When
    the block ends without an exception every file is fsynced, then each is renamed to its path;
    on any exception the temporary files are removed and the exception passes on (OSError, or
    MXNet's MXNetError on a full disk: the caller names the file in its own one line)."""
    tmps = [temporary_name(path) for path in paths]
    try:
        yield tmps[0] if len(tmps) == 1 else tmps
        for tmp in tmps:
            fsync_path(tmp)
        for tmp, path in zip(tmps, paths):
            os.replace(tmp, path)
        for folder in sorted({os.path.dirname(path) or '.' for path in paths}):
            fsync_path(folder)
    finally:
        for tmp in tmps:
            if os.path.exists(tmp):
                os.remove(tmp)


@contextmanager
def atomic_file(path, mode='wb', **kwargs):
    """``open(temporary name, mode, **kwargs)`` for the block, published at ``path`` as atomic_paths does."""
    with atomic_paths(path) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f
