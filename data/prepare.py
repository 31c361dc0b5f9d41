"""Prepare a benchmark data set from its official archives: checksum, safe extraction, counts.

    python3 -m data.prepare cub200 ~/Downloads --data_dir datasets/CUB_200_2011
    python3 -m data.prepare cub200 ~/Downloads --download        # fetch the archive first

SRC is the folder holding the data set's files as published (or, for a data set of one archive,
that archive). Each file's MD5 is checked against the value published for the official archive
(CHECKSUMS, with where it is published; docs/datasets.md); a file without a published value is
accepted and its SHA-256 recorded, so that a later copy can be compared. The archives are extracted
into a new folder beside DST (``DST.partial-XXXX``), never outside it (data.archive); the project's
own reader (data.registry) must then list the published number of images of every split
(COUNTS), each present on disk; a manifest (MANIFEST) is written, and only then is the folder
renamed to DST. Any failure is one line, exit status 2, and leaves nothing under DST.

The links of these data sets have moved over the years, so the checksum is the contract, not the
URL: ``--download`` fetches a missing file from its known source (SOURCES) or from
``--mirror URL`` (URL/FILE), writes it under a temporary name, verifies it and renames it into SRC.
"""
import datetime
import hashlib
import json
import os
import shlex
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from typing import NamedTuple

from utils.atomic import atomic_file
from utils.errors import OneLineParser, UserError, run_command

from .archive import CHUNK, extract
from .registry import DATA_DIRS


class Part(NamedTuple):
    """One published file of a data set.

    name: its published file name. kind: 'archive' (extracted) or 'file' (copied).
    target: where it goes in DST ('' = DST itself for an archive; a relative path for a file).
    strip: the archive's top folder whose contents go straight into DST ('' = none).
    also: other paths, relative to SRC, where it may sit (the publisher's folder layout).
    """
    name: str
    kind: str = 'archive'
    target: str = ''
    strip: str = ''
    also: tuple = ()


PARTS = {  # keys: registry.PREPARED
    'cars196': (Part('car_ims.tgz'), Part('cars_annos.mat', kind='file', target='cars_annos.mat')),
    'cub200': (Part('CUB_200_2011.tgz', strip='CUB_200_2011'),),
    'sop': (Part('Stanford_Online_Products.zip', strip='Stanford_Online_Products'),),
    'inshop': (Part('img.zip', also=('Img/img.zip',)),
               Part('list_eval_partition.txt', kind='file', target='Eval/list_eval_partition.txt',
                    also=('Eval/list_eval_partition.txt',))),
}

# MD5 of the official files, as published in code that downloads them (no publisher gives one).
# In-Shop's files (Google Drive folder of DeepFashion) have none published: see docs/datasets.md.
CHECKSUMS = {
    'car_ims.tgz': ('d5c8f0aa497503f355e17dc7886c3f14', 'lenscloth/RKD dataset/cars196.py (img_md5)'),
    'cars_annos.mat': ('b407c6086d669747186bd1d764ff9dbc', 'lenscloth/RKD dataset/cars196.py (anno_md5)'),
    'CUB_200_2011.tgz': ('97eceeb196236b17998738112f37df78',
                         'TDeVries/cub2011_dataset cub2011.py; ContinualAI/avalanche cub200.py (tgz_md5)'),
    'Stanford_Online_Products.zip': ('7f73d41a2f44250d4779881525aea32e',
                                     'lenscloth/RKD dataset/stanford.py (zip_md5)'),
}

# Where --download fetches a file without --mirror: only sources with a stable address.
# CaltechDATA is the CUB authors' archive (DOI 10.22002/D1.20098), also what pytorch-metric-learning
# 2.8 downloads. The Stanford addresses of CARS196 and SOP have gone dead (TFDS #4932) and In-Shop is a
# Google Drive folder: for those, download by hand or give --mirror.
SOURCES = {
    'CUB_200_2011.tgz': 'https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz',
}

# Images of every split as the data set's papers publish them, as the project's readers split them.
COUNTS = {
    'cars196': {'train': 8054, 'test': 8131},                     # 16,185: classes 1-98 | 99-196
    'cub200': {'train': 5864, 'test': 5924},                      # 11,788: classes 1-100 | 101-200
    'sop': {'train': 59551, 'test': 60502},                       # 120,053: Ebay_train | Ebay_test
    'inshop': {'train': 25882, 'query': 14218, 'gallery': 12612},  # 52,712
}

# Flags main.py needs beyond --data_name/--data_dir (the Recall@K these benchmarks report).
EXTRA_FLAGS = {'sop': ['--recallk', '1,10,100,1000'], 'inshop': ['--recallk', '1,10,20,30,40,50']}

MANIFEST = 'prepared.json'
DOWNLOAD_TIMEOUT = 60  # seconds without a byte before a download is given up


def progress_bar(total, desc):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit='B', unit_scale=True, file=sys.stderr, dynamic_ncols=True)


def digests(path):
    """(md5, sha256) hex digests of the file at path, read once."""
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    with open(path, 'rb') as f, progress_bar(os.path.getsize(path), 'checksum ' + os.path.basename(path)) as bar:
        for chunk in iter(lambda: f.read(CHUNK), b''):
            md5.update(chunk)
            sha256.update(chunk)
            bar.update(len(chunk))
    return md5.hexdigest(), sha256.hexdigest()


def verify(path, name):
    """The manifest entry of the file at path, published as name; UserError on a wrong MD5."""
    md5, sha256 = digests(path)
    expected, published_in = CHECKSUMS.get(name, (None, None))
    if expected is not None and md5 != expected:
        raise UserError('%s: MD5 %s, but the official %s has %s (published in %s): a damaged, partial '
                        'or different file' % (path, md5, name, expected, published_in))
    return {'name': name, 'bytes': os.path.getsize(path), 'md5': md5, 'sha256': sha256,
            'published_md5': expected, 'published_in': published_in}


def download(url, path):
    """Fetch url into path.part (fsynced); returns that path. UserError on any failure, the .part removed."""
    partial = path + '.part'
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response, open(partial, 'wb') as out:
            length = response.headers.get('Content-Length', '')
            total = int(length) if length.isdigit() else None
            with progress_bar(total, 'download ' + os.path.basename(path)) as bar:
                for chunk in iter(lambda: response.read(CHUNK), b''):
                    out.write(chunk)
                    bar.update(len(chunk))
            if total is not None and out.tell() != total:
                raise UserError('download of %s stopped after %d of %d bytes' % (url, out.tell(), total))
            out.flush()
            os.fsync(out.fileno())
        return partial
    except BaseException as err:
        if os.path.exists(partial):
            os.remove(partial)
        if isinstance(err, urllib.error.HTTPError):
            raise UserError('cannot download %s: HTTP %d %s' % (url, err.code, err.reason)) from None
        if isinstance(err, urllib.error.URLError):
            raise UserError('cannot download %s: %s' % (url, err.reason)) from None
        if isinstance(err, (OSError, ValueError)):  # a socket timeout is an OSError
            raise UserError('cannot download %s into %s: %s' % (url, path, err)) from None
        raise


def locate(name, src, fetch, mirror):
    """[(part, path)] of data set name's files in SRC, downloaded there first when fetch is set.

    A downloaded file is verified before it gets its final name, so a wrong one never sits in SRC
    looking finished. Returns the manifest entries of the downloaded files too (already verified).
    """
    parts = PARTS[name]
    if os.path.isfile(src):
        if len(parts) != 1:
            raise UserError('%s is a file, but %s needs %s: give the folder that holds them'
                            % (src, name, ' and '.join(part.name for part in parts)))
        return [(parts[0], src)], {}
    if not os.path.isdir(src):
        if not fetch:
            raise UserError('%s does not exist (SRC: the folder holding %s, or pass --download)'
                            % (src, ' and '.join(part.name for part in parts)))
        os.makedirs(src)
    found, verified = [], {}
    for part in parts:
        path = next((os.path.join(src, rel) for rel in (part.name,) + part.also
                     if os.path.isfile(os.path.join(src, rel))), None)
        if path is None:
            if not fetch:
                raise UserError('%s not found in %s (expected %s; see docs/datasets.md for where it is '
                                'published, or pass --download)'
                                % (part.name, src, ' or '.join((part.name,) + part.also)))
            url = mirror.rstrip('/') + '/' + part.name if mirror else SOURCES.get(part.name)
            if url is None:
                raise UserError('%s not found in %s and no stable source of it is known: download it by '
                                'hand (docs/datasets.md) or pass --mirror URL' % (part.name, src))
            path = os.path.join(src, part.name)
            partial = download(url, path)
            try:
                verified[path] = verify(partial, part.name)
            except UserError:
                os.remove(partial)
                raise
            os.replace(partial, path)
        found.append((part, path))
    return found, verified


def split_counts(splits):
    """{split: number of images} of a Splits, with query and gallery apart when it has them."""
    if splits.query is None:
        return {'train': len(splits.train), 'test': len(splits.test)}
    return {'train': len(splits.train), 'query': len(splits.query), 'gallery': len(splits.gallery)}


def check_contents(name, folder):
    """The split counts the project's reader finds in folder; UserError unless they are the published
    ones and every listed image is a file."""
    from .registry import get_dataset
    splits = get_dataset(name, folder)
    counts = split_counts(splits)
    if counts != COUNTS[name]:
        raise UserError('%s: the extracted files list %s images, the release has %s (a partial or '
                        'different archive?)' % (name, _fmt(counts), _fmt(COUNTS[name])))
    missing = [path for path, _ in splits.train + splits.test if not os.path.isfile(path)]
    if missing:
        raise UserError('%s: %d listed image(s) are missing after extraction, e.g. %s (a partial archive?)'
                        % (name, len(missing), os.path.relpath(missing[0], folder)))
    return counts


def _fmt(counts):
    return ', '.join('%s %s' % (split, format(n, ',')) for split, n in counts.items())


def write_json(path, payload):
    """payload as JSON at path: written to a temporary name, fsynced, renamed."""
    with atomic_file(path, 'w') as f:
        json.dump(payload, f, indent=1)
        f.write('\n')


def command_line(name, data_dir):
    """The main.py command that trains on the prepared data set."""
    return ' '.join(['python3', 'main.py', '--data_name', name, '--data_dir', shlex.quote(data_dir)]
                    + EXTRA_FLAGS.get(name, []))


def _check_destination(data_dir):
    if os.path.lexists(data_dir) and not (os.path.isdir(data_dir) and not os.listdir(data_dir)):
        raise UserError('%s already exists and is not an empty folder (--data_dir): remove it or '
                        'choose another' % data_dir)


def _fill(found, folder):
    """Extract or copy every part into folder; the number of files written."""
    files = 0
    for part, path in found:
        if part.kind == 'archive':
            files += extract(path, folder, strip=part.strip)
            continue
        target = os.path.join(folder, part.target)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(path, target)
        files += 1
    return files


def prepare(name, src, data_dir=None, fetch=False, mirror=None):
    """Verify, extract and check data set name from SRC into data_dir; returns the manifest.

    Nothing exists under data_dir until every check passed (the work happens in a sibling
    ``.partial-`` folder, removed on any failure).
    """
    if name not in PARTS:
        raise UserError('unknown data set %r; choose one of %s' % (name, ', '.join(PARTS)))
    data_dir = data_dir or DATA_DIRS[name]
    _check_destination(data_dir)
    found, verified = locate(name, src, fetch, mirror)
    archives = [verified.get(path) or verify(path, part.name) for part, path in found]
    parent = os.path.dirname(os.path.abspath(data_dir))
    try:
        os.makedirs(parent, exist_ok=True)
        partial = tempfile.mkdtemp(prefix=os.path.basename(os.path.abspath(data_dir)) + '.partial-',
                                   dir=parent)
    except OSError as err:
        raise UserError('cannot create a folder in %s (--data_dir): %s' % (parent, err.strerror)) from None
    try:
        try:
            files = _fill(found, partial)
        except OSError as err:  # the archive module names its own write errors; these are the copies
            raise UserError('cannot write into %s: %s' % (partial, err.strerror or err)) from None
        counts = check_contents(name, partial)
        manifest = {
            'data_name': name,
            'prepared': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            'files': archives,
            'extracted_files': files,
            'counts': counts,
            'images': sum(counts.values()),
            'command': command_line(name, data_dir),
        }
        try:
            write_json(os.path.join(partial, MANIFEST), manifest)
            os.sync()  # the extracted files reach the disk before the folder gets its final name
            _check_destination(data_dir)
            os.replace(partial, data_dir)
        except OSError as err:
            raise UserError('cannot finish %s: %s' % (data_dir, err.strerror or err)) from None
    finally:
        if os.path.isdir(partial):
            shutil.rmtree(partial, ignore_errors=True)
    return manifest


def build_parser():
    parser = OneLineParser(prog='python3 -m data.prepare', description=__doc__.split('\n\n')[0])
    parser.add_argument('name', choices=sorted(PARTS), help='the data set')
    parser.add_argument('src', help='the folder holding its published files (or its one archive); '
                        'with --download, where they are downloaded to')
    parser.add_argument('--data_dir', default=None,
                        help='the folder to create (must not exist, or be empty); default: ' +
                        ', '.join('%s %s' % (name, DATA_DIRS[name]) for name in PARTS))
    parser.add_argument('--download', action='store_true',
                        help='download the files SRC lacks (from --mirror, or a known stable source: '
                        'CUB_200_2011.tgz from CaltechDATA)')
    parser.add_argument('--mirror', default=None, metavar='URL',
                        help='with --download: fetch each file from URL/FILE_NAME')
    parser.add_argument('--debug', action='store_true', help='show tracebacks')
    return parser


def run(argv):
    args = build_parser().parse_args(argv)
    if args.mirror and not args.download:
        raise UserError('--mirror is used only with --download')
    manifest = prepare(args.name, args.src, args.data_dir, args.download, args.mirror)
    data_dir = args.data_dir or DATA_DIRS[args.name]
    print('prepared %s in %s: %s images (%s); manifest %s'
          % (args.name, data_dir, format(manifest['images'], ','), _fmt(manifest['counts']),
             os.path.join(data_dir, MANIFEST)), file=sys.stderr)
    for entry in manifest['files']:
        if entry['published_md5'] is None:
            print('note: no checksum of %s is published; its SHA-256 %s is in the manifest'
                  % (entry['name'], entry['sha256']), file=sys.stderr)
    print(manifest['command'])


if __name__ == '__main__':
    sys.exit(run_command(run))
