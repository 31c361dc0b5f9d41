"""utils/atomic.py: a result under its final name is whole or absent, whatever happens while it is written."""
import os

import pytest

from utils import atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / 'args.txt'
    path.write_text('old')
    with pytest.raises(OSError):
        with atomic.atomic_file(str(path), 'w') as f:
            f.write('half of the new')
            raise OSError(28, 'No space left on device')
    assert path.read_text() == 'old' and os.listdir(str(tmp_path)) == ['args.txt']


def test_several_files_are_published_together_or_not_at_all(tmp_path):
    finals = [str(tmp_path / 'm-symbol.json'), str(tmp_path / 'm-0000.params')]
    with pytest.raises(RuntimeError):
        with atomic.atomic_paths(*finals) as tmps:
            for tmp in tmps:
                with open(tmp, 'w') as f:
                    f.write('x')
            raise RuntimeError('the second writer failed')
    assert os.listdir(str(tmp_path)) == []
    with atomic.atomic_paths(*finals) as tmps:
        assert [os.path.dirname(t) for t in tmps] == [str(tmp_path)] * 2
        assert all(os.path.basename(t).startswith('.tmp-') for t in tmps)     # hidden beside the result
        for tmp in tmps:
            with open(tmp, 'w') as f:
                f.write('x')
    assert sorted(os.listdir(str(tmp_path))) == sorted(os.path.basename(p) for p in finals)


def test_the_data_is_on_disk_before_the_rename_and_the_rename_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, 'fsync', lambda fd: (events.append(('fsync', os.readlink('/proc/self/fd/%d' % fd))),
                                                  real_fsync(fd))[1])
    monkeypatch.setattr(os, 'replace', lambda a, b: (events.append(('replace', b)), real_replace(a, b))[1])
    path = str(tmp_path / 'e.npy')
    with atomic.atomic_file(path) as f:
        f.write(b'data')
        tmp = f.name
    assert events == [('fsync', tmp), ('replace', path), ('fsync', str(tmp_path))]
