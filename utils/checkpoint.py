"""Files that are whole or absent: write to a temporary name in the same folder, then rename."""
import os


def save_parameters_atomic(net, path):
    """net.save_parameters(path) such that a crash at any moment leaves the old file (or none)."""
    tmp = '%s.tmp-%d' % (path, os.getpid())
    try:
        net.save_parameters(tmp)
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
