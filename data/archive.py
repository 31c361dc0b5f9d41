"""Safe extraction of a data set's tar or zip archive into a folder.

Only regular files and folders are written, each at a path checked to lie inside the destination:
a member with an absolute path, a ``..`` component, a backslash or a NUL byte, a symbolic or hard
link, a device or a FIFO stops the extraction with one line naming the archive and the member.
The files are written by this module (never by ``extractall``), so the archive's permissions,
owners and set-uid bits are ignored; a member already written once (a duplicate) is an error rather
than a silent overwrite. A full disk is one line too.
"""
import errno
import lzma
import os
import stat
import sys
import tarfile
import zipfile
import zlib

from utils.errors import UserError

CHUNK = 1 << 20
# What reading a damaged archive raises (gzip's BadGzipFile and bz2's errors are OSErrors).
READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError)


class Unreadable(Exception):
    """Reading the archive failed (as opposed to writing the extracted file)."""


def member_path(dest, name, strip=''):
    """The path in dest where member ``name`` goes, None for the stripped top folder itself.

    strip: a leading folder of the archive (``'CUB_200_2011'``) whose contents go straight into
    dest; members outside it keep their path. Raises ValueError (the reason) for a name that could
    land outside dest.
    """
    if '\x00' in name:
        raise ValueError('a NUL byte in its name')
    if '\\' in name:
        raise ValueError('a backslash in its name (a Windows path?)')
    if name.startswith('/') or (len(name) > 1 and name[1] == ':'):
        raise ValueError('an absolute path')
    parts = [part for part in name.split('/') if part not in ('', '.')]
    if '..' in parts:
        raise ValueError("a '..' component")
    if strip and parts[:1] == [strip]:
        parts = parts[1:]
    if not parts:
        return None
    target = os.path.join(dest, *parts)
    # Defence in depth: nothing above creates links, but a path resolving elsewhere is refused.
    root = os.path.realpath(dest)
    if os.path.commonpath([root, os.path.realpath(target)]) != root:
        raise ValueError('a path resolving outside the destination')
    return target


def copy_stream(source, target_path):
    """Write the file object source to a new file target_path (error if it exists); bytes written."""
    written = 0
    with open(target_path, 'xb') as out:
        while True:
            try:
                chunk = source.read(CHUNK)
            except READ_ERRORS as err:
                raise Unreadable(err) from None
            if not chunk:
                return written
            out.write(chunk)
            written += len(chunk)


class _Extraction:
    """The shared bookkeeping of one extraction: checks, writes, counts, the error lines."""

    def __init__(self, archive, dest, strip):
        self.archive, self.dest, self.strip = archive, dest, strip
        self.files = 0

    def refuse(self, name, reason):
        raise UserError('%s: member %r is %s; refusing to extract it (a damaged or hostile archive)'
                        % (self.archive, name, reason))

    def target(self, name):
        try:
            return member_path(self.dest, name, self.strip)
        except ValueError as err:
            self.refuse(name, 'unsafe: ' + str(err))

    def make_dir(self, name):
        path = self.target(name)
        if path is not None:
            self.guard(name, os.makedirs, path, exist_ok=True)

    def write_file(self, name, open_member):
        path = self.target(name)
        if path is None:
            self.refuse(name, 'a file where the top folder was expected')
        self.guard(name, os.makedirs, os.path.dirname(path), exist_ok=True)
        with open_member() as source:
            self.guard(name, copy_stream, source, path)
        self.files += 1

    def guard(self, name, call, *args, **kwargs):
        """call(*args), its OSErrors turned into one line naming the member."""
        try:
            return call(*args, **kwargs)
        except FileExistsError:
            raise UserError('%s: member %r appears twice (or clashes with a folder); refusing to '
                            'overwrite it' % (self.archive, name)) from None
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise UserError('no space left on the device of %s while extracting %r from %s'
                                % (self.dest, name, self.archive)) from None
            raise UserError('%s: cannot write member %r into %s: %s'
                            % (self.archive, name, self.dest, err.strerror or err)) from None


def _extract_tar(job, progress):
    with open(job.archive, 'rb') as raw:
        try:
            # Stream mode: one pass over the compressed file, members checked as they come.
            with tarfile.open(fileobj=raw, mode='r|*') as tar:
                for member in tar:
                    if member.isdir():
                        job.make_dir(member.name)
                    elif member.isreg():
                        job.write_file(member.name, lambda m=member: tar.extractfile(m))
                    elif member.issym() or member.islnk():
                        job.refuse(member.name, 'a link (to %r)' % member.linkname)
                    else:
                        job.refuse(member.name, 'a device, FIFO or other special file')
                    progress(raw.tell())
        except (Unreadable,) + READ_ERRORS as err:
            raise UserError('%s is not a readable tar archive or is truncated: %s'
                            % (job.archive, err or type(err).__name__)) from None


def _extract_zip(job, progress):
    try:
        with zipfile.ZipFile(job.archive) as archive:
            done = 0
            for info in archive.infolist():
                mode = info.external_attr >> 16
                kind = stat.S_IFMT(mode)
                if info.is_dir():
                    job.make_dir(info.filename)
                elif stat.S_ISLNK(mode):
                    job.refuse(info.filename, 'a symbolic link')
                elif kind not in (0, stat.S_IFREG):
                    job.refuse(info.filename, 'a device, FIFO or other special file')
                else:
                    job.write_file(info.filename, lambda i=info: archive.open(i))
                done += info.compress_size
                progress(done)
    except (Unreadable,) + READ_ERRORS as err:
        raise UserError('%s is not a readable zip archive or is truncated: %s'
                        % (job.archive, err or type(err).__name__)) from None


def extract(archive, dest, strip='', desc=None):
    """Extract archive (tar, possibly compressed, or zip) into the existing folder dest.

    Returns the number of files written. Raises UserError (one line) for an unsafe member, an
    unreadable or truncated archive, a full disk. A progress bar on stderr counts archive bytes.
    """
    from tqdm import tqdm
    job = _Extraction(archive, dest, strip)
    extract_kind = _extract_zip if zipfile.is_zipfile(archive) else _extract_tar
    with tqdm(total=os.path.getsize(archive), desc=desc or 'extracting ' + os.path.basename(archive),
              unit='B', unit_scale=True, file=sys.stderr, dynamic_ncols=True) as bar:
        def progress(position):
            bar.update(position - bar.n)
        extract_kind(job, progress)
    return job.files
