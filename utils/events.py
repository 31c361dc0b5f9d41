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


# Bytes read at a time: memory stays near this, not the file's size (a long run's log is large)
CHUNK = 1 << 24


def _check_data(path, records, first_index):
    """UserError naming the first of ``records`` [(offset, payload, masked CRC)] (record numbers
    from first_index) whose payload does not match its checksum; checked per payload length at once."""
    bad = []
    for length in set(len(payload) for _, payload, _ in records):
        index = np.array([i for i, (_, payload, _) in enumerate(records) if len(payload) == length])
        rows = np.frombuffer(b''.join(records[i][1] for i in index), np.uint8).reshape(len(index), length)
        expected = np.array([records[i][2] for i in index], dtype=np.uint64)
        bad.extend(index[mask(crc32c_rows(rows)) != expected].tolist())
    if bad:
        first = min(bad)
        raise UserError('event file %s is corrupt: record %d (byte %d) has a bad data checksum'
                        % (path, first_index + first, records[first][0]))


def read_records(path, chunk=CHUNK):
    """Yield the payload (bytes) of every record of the TFRecord file ``path``, both checksums checked.

    UserError naming the file when it is not a regular file (a FIFO or device would block or never
    end) or naming the first corrupt record; a record cut short at the end of the file (a crash
    while it was written) ends it. Reads ``chunk`` bytes at a time, never past the file's size.
    """
    try:        # O_NONBLOCK: opening a FIFO would wait for a writer
        f = os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), 'rb')
    except OSError as exc:
        raise UserError('cannot read event file %s: %s' % (path, exc.strerror)) from exc
    with f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UserError('event file %s is not a regular file' % path)
        buf, start, index = b'', 0, 0       # buf: the bytes from file offset start not yet parsed
        while True:
            data = f.read(chunk)
            buf += data
            records, pos, cut = [], 0, False
            while pos + 12 <= len(buf):
                length, length_crc = struct.unpack_from('<QI', buf, pos)
                if mask(crc32c(buf[pos:pos + 8])) != length_crc:    # first: a bad length misleads the rest
                    raise UserError('event file %s is corrupt: record %d (byte %d) has a bad length checksum'
                                    % (path, index + len(records), start + pos))
                if start + pos + 16 + length > info.st_size:
                    cut = True      # a crash while it was written: everything before it is intact
                    break
                if pos + 16 + length > len(buf):
                    break           # completed by the next chunk
                records.append((start + pos, buf[pos + 12:pos + 12 + length],
                                struct.unpack_from('<I', buf, pos + 12 + length)[0]))
                pos += 16 + length
            _check_data(path, records, index)
            yield from (payload for _, payload, _ in records)
            index += len(records)
            buf, start = buf[pos:], start + pos
            if cut or not data:
                return


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
