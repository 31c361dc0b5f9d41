"""Read the scalars back from mxboard event files, with mxboard's own protos.

tensorboard cannot be imported next to mxboard (their protos clash), so this reads the TFRecord
framing directly: per record an 8-byte little-endian length, the masked CRC-32C of those 8 bytes,
the Event proto, and the masked CRC-32C of the proto. Both checksums are checked: a record that
fails one is reported by file, record number and byte offset, never skipped with the rest of its
file. Only the last record may be cut short (a crash while writing it): what precedes it is read.
"""
import glob
import os
import stat
import struct
from collections import defaultdict

import numpy as np

from utils.errors import UserError


def _crc32c_table():
    """The 256 entries of the table-driven CRC-32C (Castagnoli; reflected polynomial 0x82F63B78)."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_TABLE = _crc32c_table()
_NP_TABLE = np.array(_TABLE, dtype=np.uint32)


def crc32c(data):
    """CRC-32C of bytes ``data`` (crc32c(b'123456789') == 0xE3069283)."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc32c_rows(rows):
    """CRC-32C of every row of a (n, L) uint8 array, as (n,) uint32: crc32c over the n rows at once,
    one byte column per step (an event file's records come in a few lengths)."""
    crc = np.full(len(rows), 0xFFFFFFFF, dtype=np.uint32)
    for column in rows.T:
        crc = _NP_TABLE[(crc ^ column) & 0xFF] ^ (crc >> 8)
    return crc ^ np.uint32(0xFFFFFFFF)


def mask(crc):
    """The TFRecord checksum of a CRC-32C (int or uint32 array): rotated right by 15 bits plus
    0xA282EAD8, mod 2^32."""
    if isinstance(crc, int):
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    crc = crc.astype(np.uint64)
    return (((crc >> np.uint64(15)) | (crc << np.uint64(17))) + np.uint64(0xA282EAD8)) & np.uint64(0xFFFFFFFF)


def read_records(path):
    """The payloads (bytes) of the records of the TFRecord file ``path``, both checksums checked.

    UserError naming the file when it is not a regular file (a FIFO or device would block or never
    end) or naming the first corrupt record; a record cut short at the end of the file (a crash
    while it was written) ends the list. Never reads more than the file's size.
    """
    try:        # O_NONBLOCK: opening a FIFO would wait for a writer
        f = os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), 'rb')
    except OSError as exc:
        raise UserError('cannot read event file %s: %s' % (path, exc.strerror)) from exc
    with f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UserError('event file %s is not a regular file' % path)
        data = f.read(info.st_size)
    offsets, payloads, checksums = [], [], []
    pos = 0
    while pos + 12 <= len(data):
        length, length_crc = struct.unpack_from('<QI', data, pos)
        if mask(crc32c(data[pos:pos + 8])) != length_crc:      # checked first: a bad length misleads the rest
            raise UserError('event file %s is corrupt: record %d (byte %d) has a bad length checksum'
                            % (path, len(offsets), pos))
        if pos + 12 + length + 4 > len(data):
            break
        offsets.append(pos)
        payloads.append(data[pos + 12:pos + 12 + length])
        checksums.append(struct.unpack_from('<I', data, pos + 12 + length)[0])
        pos += 12 + length + 4
    checksums = np.array(checksums, dtype=np.uint64)
    bad = []
    for length in set(map(len, payloads)):
        index = np.array([i for i, p in enumerate(payloads) if len(p) == length])
        rows = np.frombuffer(b''.join(payloads[i] for i in index), np.uint8).reshape(len(index), length)
        bad.extend(index[mask(crc32c_rows(rows)) != checksums[index]].tolist())
    if bad:
        first = min(bad)
        raise UserError('event file %s is corrupt: record %d (byte %d) has a bad data checksum'
                        % (path, first, offsets[first]))
    return payloads


def read_scalars(logdir):
    """{tag: [(step, value), ...]} of every event file under logdir, in file then write order."""
    from google.protobuf.message import DecodeError
    from mxboard.proto.event_pb2 import Event
    files = sorted(path for path in glob.glob(os.path.join(glob.escape(logdir), '**', 'events.out.tfevents.*'),
                                              recursive=True)
                   if not os.path.isdir(path))      # a folder may be named like one
    scalars = defaultdict(list)
    for path in files:
        for index, payload in enumerate(read_records(path)):
            try:
                event = Event.FromString(payload)
            except DecodeError:
                raise UserError('event file %s is corrupt: record %d is not a TensorBoard event' % (path, index)) from None
            for value in event.summary.value:
                if value.HasField('simple_value'):
                    scalars[value.tag].append((event.step, value.simple_value))
    return dict(scalars)
