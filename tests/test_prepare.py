"""data.prepare: data sets from (small, test-built) archives, hostile archives, a local download."""
import errno
import functools
import hashlib
import http.server
import io
import json
import os
import stat
import tarfile
import threading
import zipfile

import pytest

import data
from data import archive, prepare
from tests.test_data import write_cars_mat
from tests.test_datasets import write_jpeg, write_sop
from utils.errors import UserError, run_command


def md5_of(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def tar_folder(archive_path, root, names):
    """archive_path: a gzipped tar of root/NAME for each of names (folders recursively)."""
    with tarfile.open(archive_path, 'w:gz') as tar:
        for name in names:
            tar.add(root / name, arcname=name)
    return archive_path


def zip_folder(archive_path, root, name):
    with zipfile.ZipFile(archive_path, 'w') as z:
        for path in sorted((root / name).rglob('*')):
            z.write(path, path.relative_to(root).as_posix())
    return archive_path


def build_cub(build, src, drop_image=False):
    """A CUB-like CUB_200_2011.tgz in src (4 classes, 2 images each; attributes.txt beside the folder
    as in the release); returns the counts of its splits."""
    root = build / 'CUB_200_2011'
    images, labels = [], []
    for i in range(8):
        cls = i // 2 + 1
        rel = '%03d.Bird_%d/Bird_%d_%d.jpg' % (cls, cls, cls, i)
        if not (drop_image and i == 5):
            write_jpeg(root / 'images' / rel, i)
        images.append('%d %s' % (i + 1, rel))
        labels.append('%d %d' % (i + 1, cls))
    (root / 'images.txt').write_text('\n'.join(images) + '\n')
    (root / 'image_class_labels.txt').write_text('\n'.join(labels) + '\n')
    (build / 'attributes.txt').write_text('1 has_bill_shape::curved\n')
    src.mkdir(exist_ok=True)
    tar_folder(src / 'CUB_200_2011.tgz', build, ['attributes.txt', 'CUB_200_2011'])
    return {'train': 4, 'test': 4}


def build_cars(build, src):
    build.mkdir()
    write_cars_mat(build)
    src.mkdir(exist_ok=True)
    tar_folder(src / 'car_ims.tgz', build, ['car_ims'])
    (src / 'cars_annos.mat').write_bytes((build / 'cars_annos.mat').read_bytes())
    return {'train': 4, 'test': 4}


def build_sop(build, src):
    write_sop(build / 'Stanford_Online_Products')
    src.mkdir(exist_ok=True)
    zip_folder(src / 'Stanford_Online_Products.zip', build, 'Stanford_Online_Products')
    return {'train': 4, 'test': 3}


def build_inshop(build, src):
    """In-Shop as its Google Drive folder holds it: Img/img.zip and Eval/list_eval_partition.txt."""
    rows = [('id_01', 'train'), ('id_01', 'train'), ('id_02', 'train'),
            ('id_03', 'query'), ('id_03', 'gallery'), ('id_04', 'query'), ('id_04', 'gallery')]
    lines = [str(len(rows)), 'image_name item_id evaluation_status']
    for i, (item, status) in enumerate(rows):
        rel = 'img/WOMEN/Dresses/%s/%02d_1_front.jpg' % (item, i)
        write_jpeg(build / rel, i)
        lines.append('%s %s %s' % (rel, item, status))
    (src / 'Img').mkdir(parents=True)
    (src / 'Eval').mkdir()
    zip_folder(src / 'Img' / 'img.zip', build, 'img')
    (src / 'Eval' / 'list_eval_partition.txt').write_text('\n'.join(lines) + '\n')
    return {'train': 3, 'query': 2, 'gallery': 2}


BUILDERS = {'cub200': build_cub, 'cars196': build_cars, 'sop': build_sop, 'inshop': build_inshop}


def test_every_prepared_data_set_is_built_here():
    assert sorted(BUILDERS) == sorted(prepare.PARTS) == sorted(data.registry.PREPARED)


@pytest.fixture
def published(monkeypatch):
    """publish(name, src, counts): make the test-built files of src 'the official ones' (their MD5
    and split counts in the module's tables); returns nothing."""
    def publish(name, src, counts):
        monkeypatch.setitem(prepare.COUNTS, name, counts)
        for part in prepare.PARTS[name]:
            path = next(src / rel for rel in (part.name,) + part.also if (src / rel).is_file())
            if part.name in prepare.CHECKSUMS:
                monkeypatch.setitem(prepare.CHECKSUMS, part.name, (md5_of(path), 'the test'))
    return publish


def run(argv, capsys):
    """(exit status, stdout, stderr's last line) of python3 -m data.prepare argv."""
    status = run_command(prepare.run, [str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    return status, out, lines[-1] if lines else ''


def assert_nothing_left(dst):
    """No final folder and no .partial- folder beside it."""
    assert not dst.exists()
    assert not [p for p in dst.parent.iterdir() if '.partial-' in p.name]


@pytest.mark.parametrize('name', sorted(BUILDERS))
def test_prepare_each_data_set(tmp_path, capsys, published, name):
    src, dst = tmp_path / 'downloads', tmp_path / 'datasets' / name
    counts = BUILDERS[name](tmp_path / 'build', src)
    published(name, src, counts)
    status, out, err = run([name, src, '--data_dir', dst], capsys)
    assert status == 0, err
    expected = 'python3 main.py --data_name %s --data_dir %s' % (name, dst)
    assert out.strip() == ' '.join([expected] + prepare.EXTRA_FLAGS.get(name, []))
    # The project's reader finds the published counts in the final folder, every image a file.
    splits = data.get_dataset(name, str(dst))
    assert prepare.split_counts(splits) == counts
    assert all(os.path.isfile(path) for path, _ in splits.train + splits.test)
    manifest = json.loads((dst / prepare.MANIFEST).read_text())
    assert manifest['counts'] == counts and manifest['images'] == sum(counts.values())
    assert manifest['command'] == out.strip()
    for entry in manifest['files']:
        path = next(p for p in src.rglob(entry['name']))
        assert entry['md5'] == md5_of(path) and entry['sha256'] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry['published_md5'] == prepare.CHECKSUMS.get(entry['name'], (None,))[0]
    assert not [p for p in dst.parent.iterdir() if '.partial-' in p.name]


def test_cub_strips_the_release_folder(tmp_path, capsys, published):
    """DST is the data set's folder: CUB_200_2011/ unpacks into it, attributes.txt beside."""
    src, dst = tmp_path / 'src', tmp_path / 'CUB_200_2011'
    published('cub200', src, build_cub(tmp_path / 'build', src))
    assert run(['cub200', src / 'CUB_200_2011.tgz', '--data_dir', dst], capsys)[0] == 0  # SRC: the archive
    assert (dst / 'images.txt').is_file() and (dst / 'attributes.txt').is_file()
    assert not (dst / 'CUB_200_2011').exists()


def test_default_data_dir(tmp_path, capsys, published, monkeypatch):
    monkeypatch.chdir(tmp_path)
    published('cub200', tmp_path / 'src', build_cub(tmp_path / 'build', tmp_path / 'src'))
    status, out, _ = run(['cub200', 'src'], capsys)
    assert status == 0
    assert (tmp_path / 'datasets' / 'CUB_200_2011' / 'images.txt').is_file()
    assert out.split() == ['python3', 'main.py', '--data_name', 'cub200', '--data_dir', './datasets/CUB_200_2011']


def test_unpublished_checksum_is_recorded(tmp_path, capsys, published):
    """In-Shop has no published MD5: accepted, its SHA-256 in the manifest and said so."""
    src, dst = tmp_path / 'src', tmp_path / 'inshop'
    published('inshop', src, build_inshop(tmp_path / 'build', src))
    status, _, _ = run(['inshop', src, '--data_dir', dst], capsys)
    assert status == 0
    entry = json.loads((dst / prepare.MANIFEST).read_text())['files'][0]
    assert entry['name'] == 'img.zip' and entry['published_md5'] is None
    assert entry['sha256'] == hashlib.sha256((src / 'Img' / 'img.zip').read_bytes()).hexdigest()


def test_wrong_checksum(tmp_path, capsys, published, monkeypatch):
    src, dst = tmp_path / 'src', tmp_path / 'cars'
    published('cars196', src, build_cars(tmp_path / 'build', src))
    monkeypatch.setitem(prepare.CHECKSUMS, 'cars_annos.mat', ('0' * 32, 'the test'))
    status, out, err = run(['cars196', src, '--data_dir', dst], capsys)
    assert status == 2 and out == ''
    assert err.startswith('error: ') and 'cars_annos.mat' in err and '0' * 32 in err
    assert_nothing_left(dst)


@pytest.mark.parametrize('change, fragment', [
    ({'train': 5, 'test': 4}, 'train 5'),
    ({'train': 4, 'query': 2, 'gallery': 2}, 'gallery 2'),
])
def test_counts_must_match_the_release(tmp_path, capsys, published, monkeypatch, change, fragment):
    src, dst = tmp_path / 'src', tmp_path / 'cub'
    published('cub200', src, build_cub(tmp_path / 'build', src))
    monkeypatch.setitem(prepare.COUNTS, 'cub200', change)
    status, _, err = run(['cub200', src, '--data_dir', dst], capsys)
    assert status == 2 and 'the release has' in err and fragment in err
    assert_nothing_left(dst)


def test_listed_image_missing_from_archive(tmp_path, capsys, published):
    src, dst = tmp_path / 'src', tmp_path / 'cub'
    published('cub200', src, build_cub(tmp_path / 'build', src, drop_image=True))
    status, _, err = run(['cub200', src, '--data_dir', dst], capsys)
    assert status == 2 and 'missing' in err and 'Bird_3_5.jpg' in err
    assert_nothing_left(dst)


def test_missing_source_file(tmp_path, capsys, published):
    src, dst = tmp_path / 'src', tmp_path / 'cars'
    published('cars196', src, build_cars(tmp_path / 'build', src))
    (src / 'cars_annos.mat').unlink()
    status, _, err = run(['cars196', src, '--data_dir', dst], capsys)
    assert status == 2 and 'cars_annos.mat not found in %s' % src in err
    assert_nothing_left(dst)


def test_truncated_archive(tmp_path, capsys, published, monkeypatch):
    src, dst = tmp_path / 'src', tmp_path / 'cub'
    published('cub200', src, build_cub(tmp_path / 'build', src))
    tgz = src / 'CUB_200_2011.tgz'
    tgz.write_bytes(tgz.read_bytes()[:len(tgz.read_bytes()) // 2])
    monkeypatch.setitem(prepare.CHECKSUMS, tgz.name, (md5_of(tgz), 'the test'))
    status, _, err = run(['cub200', src, '--data_dir', dst], capsys)
    assert status == 2 and 'truncated' in err and str(tgz) in err
    assert_nothing_left(dst)


def test_full_disk(tmp_path, capsys, published, monkeypatch):
    src, dst = tmp_path / 'src', tmp_path / 'cub'
    published('cub200', src, build_cub(tmp_path / 'build', src))
    calls, copy = [], archive.copy_stream

    def fills_up(source, target):
        calls.append(target)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return copy(source, target)
    monkeypatch.setattr(archive, 'copy_stream', fills_up)
    status, _, err = run(['cub200', src, '--data_dir', dst], capsys)
    assert status == 2 and err.startswith('error: no space left on the device') and len(calls) == 4
    assert_nothing_left(dst)


def test_existing_destination_is_kept(tmp_path, capsys, published):
    src, dst = tmp_path / 'src', tmp_path / 'cub'
    published('cub200', src, build_cub(tmp_path / 'build', src))
    dst.mkdir()
    (dst / 'mine.txt').write_text('keep')
    status, _, err = run(['cub200', src, '--data_dir', dst], capsys)
    assert status == 2 and 'not an empty folder' in err
    assert (dst / 'mine.txt').read_text() == 'keep' and len(list(dst.iterdir())) == 1


# ---------------------------------------------------------------- hostile archives

def tar_member(tar, name, kind=tarfile.REGTYPE, payload=b'x', linkname=''):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    info.size = len(payload) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(payload) if kind == tarfile.REGTYPE else None)


HOSTILE_TAR = {
    'dotdot': (dict(name='CUB_200_2011/../../evil.txt'), "'..' component"),
    'absolute': (dict(name='{outside}/evil.txt'), 'absolute path'),
    'symlink_out': (dict(name='CUB_200_2011/images/link', kind=tarfile.SYMTYPE, linkname='{outside}'), 'a link'),
    'hardlink_out': (dict(name='CUB_200_2011/hard', kind=tarfile.LNKTYPE, linkname='../../evil.txt'), 'a link'),
    'device': (dict(name='CUB_200_2011/dev', kind=tarfile.CHRTYPE), 'special file'),
    'fifo': (dict(name='CUB_200_2011/fifo', kind=tarfile.FIFOTYPE), 'special file'),
}


@pytest.mark.parametrize('case', sorted(HOSTILE_TAR))
def test_hostile_tar_members(tmp_path, capsys, published, case):
    src, dst, outside = tmp_path / 'src', tmp_path / 'data' / 'cub', tmp_path / 'outside'
    published('cub200', src, build_cub(tmp_path / 'build', src))
    member, fragment = HOSTILE_TAR[case]
    member = {k: v.format(outside=outside) if isinstance(v, str) else v for k, v in member.items()}
    tgz = src / 'CUB_200_2011.tgz'
    with tarfile.open(tgz, 'w:gz') as tar:
        tar_member(tar, 'CUB_200_2011/README', payload=b'benign first')
        tar_member(tar, **member)
        tar_member(tar, 'CUB_200_2011/images/link/evil.txt')  # through the link, if it were made
    published('cub200', src, prepare.COUNTS['cub200'])
    status, _, err = run(['cub200', src, '--data_dir', dst], capsys)
    assert status == 2 and fragment in err and repr(member['name']) in err and str(tgz) in err
    assert_nothing_left(dst)
    assert not outside.exists() and not (tmp_path / 'evil.txt').exists()
    assert not list(tmp_path.rglob('evil.txt'))


def zip_member(z, name, mode=stat.S_IFREG | 0o644, payload=b'x'):
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    z.writestr(info, payload)


HOSTILE_ZIP = {
    'dotdot': (dict(name='Stanford_Online_Products/../../evil.txt'), "'..' component"),
    'absolute': (dict(name='/tmp/evil.txt'), 'absolute path'),
    'backslash': (dict(name='..\\..\\evil.txt'), 'backslash'),
    'symlink_out': (dict(name='Stanford_Online_Products/link', mode=stat.S_IFLNK | 0o777,
                         payload=b'../../outside'), 'symbolic link'),
    'device': (dict(name='Stanford_Online_Products/dev', mode=stat.S_IFCHR | 0o600), 'special file'),
}


@pytest.mark.parametrize('case', sorted(HOSTILE_ZIP))
def test_hostile_zip_members(tmp_path, capsys, published, case, monkeypatch):
    src, dst = tmp_path / 'src', tmp_path / 'data' / 'sop'
    src.mkdir()
    member, fragment = HOSTILE_ZIP[case]
    archive_path = src / 'Stanford_Online_Products.zip'
    with zipfile.ZipFile(archive_path, 'w') as z:
        zip_member(z, 'Stanford_Online_Products/Ebay_info.txt')
        zip_member(z, **member)
    published('sop', src, {'train': 1, 'test': 1})
    status, _, err = run(['sop', src, '--data_dir', dst], capsys)
    assert status == 2 and fragment in err and repr(member['name']) in err
    assert_nothing_left(dst)
    assert not list(tmp_path.rglob('evil.txt')) and not (tmp_path / 'outside').exists()


def test_duplicate_member_is_not_overwritten(tmp_path):
    tgz = tmp_path / 'a.tgz'
    with tarfile.open(tgz, 'w:gz') as tar:
        tar_member(tar, 'a/file', payload=b'first')
        tar_member(tar, 'a/file', payload=b'second')
    (tmp_path / 'out').mkdir()
    with pytest.raises(UserError, match='appears twice'):
        archive.extract(str(tgz), str(tmp_path / 'out'))
    assert (tmp_path / 'out' / 'a' / 'file').read_bytes() == b'first'


# ---------------------------------------------------------------- --download from 127.0.0.1

@pytest.fixture
def http_folder(tmp_path):
    """(folder, base URL): an HTTP server on 127.0.0.1 serving folder, stopped after the test."""
    folder = tmp_path / 'served'
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
    thread.start()
    try:
        yield folder, 'http://127.0.0.1:%d/' % server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def short_timeout(monkeypatch):
    monkeypatch.setattr(prepare, 'DOWNLOAD_TIMEOUT', 5)


def test_download_from_mirror(tmp_path, capsys, published, http_folder, short_timeout):
    served, url = http_folder
    published('cub200', served, build_cub(tmp_path / 'build', served))
    src, dst = tmp_path / 'downloads', tmp_path / 'cub'
    status, out, err = run(['cub200', src, '--data_dir', dst, '--download', '--mirror', url], capsys)
    assert status == 0, err
    assert md5_of(src / 'CUB_200_2011.tgz') == md5_of(served / 'CUB_200_2011.tgz')
    assert (dst / 'images.txt').is_file() and 'cub200' in out
    # A second run finds the file in SRC: no download (the server has nothing any more).
    (served / 'CUB_200_2011.tgz').unlink()
    status, _, err = run(['cub200', src, '--data_dir', tmp_path / 'again', '--download', '--mirror', url], capsys)
    assert status == 0, err


def test_download_with_wrong_checksum_leaves_nothing(tmp_path, capsys, published, http_folder, monkeypatch,
                                                     short_timeout):
    served, url = http_folder
    published('cub200', served, build_cub(tmp_path / 'build', served))
    monkeypatch.setitem(prepare.CHECKSUMS, 'CUB_200_2011.tgz', ('f' * 32, 'the test'))
    src, dst = tmp_path / 'downloads', tmp_path / 'cub'
    status, _, err = run(['cub200', src, '--data_dir', dst, '--download', '--mirror', url], capsys)
    assert status == 2 and 'f' * 32 in err
    assert list(src.iterdir()) == []  # neither the file nor its .part
    assert_nothing_left(dst)


def test_download_not_found(tmp_path, capsys, http_folder, short_timeout):
    _, url = http_folder
    src, dst = tmp_path / 'downloads', tmp_path / 'sop'
    status, _, err = run(['sop', src, '--data_dir', dst, '--download', '--mirror', url], capsys)
    assert status == 2 and 'HTTP 404' in err and 'Stanford_Online_Products.zip' in err
    assert list(src.iterdir()) == []
    assert_nothing_left(dst)


def test_download_without_a_known_source(tmp_path, capsys):
    status, _, err = run(['cars196', tmp_path / 'src', '--data_dir', tmp_path / 'c', '--download'], capsys)
    assert status == 2 and 'car_ims.tgz' in err and '--mirror' in err


def test_an_empty_destination_folder_is_filled(tmp_path, capsys, published):
    src, dst = tmp_path / 'src', tmp_path / 'cub'
    published('cub200', src, build_cub(tmp_path / 'build', src))
    dst.mkdir()
    assert run(['cub200', src, '--data_dir', dst], capsys)[0] == 0
    assert (dst / 'images.txt').is_file() and (dst / prepare.MANIFEST).is_file()
