"""Read the scalars back from mxboard event files, with mxboard's own protos.

tensorboard cannot be imported next to mxboard (their protos clash), so this reads the TFRecord
framing directly: per record an 8-byte length, a 4-byte CRC, the Event proto and another CRC.
"""
import glob
import os
import struct
from collections import defaultdict

from utils.errors import UserError


def read_scalars(logdir):
    """{tag: [(step, value), ...]} of every event file under logdir, in file then write order."""
    from google.protobuf.message import DecodeError
    from mxboard.proto.event_pb2 import Event
    files = sorted(path for path in glob.glob(os.path.join(logdir, '**', 'events.out.tfevents.*'), recursive=True)
                   if not os.path.isdir(path))      # a folder may be named like one
    scalars = defaultdict(list)
    for path in files:
        with open(path, 'rb') as f:
            data = f.read()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack('<Q', data[pos:pos + 8])
            end = pos + 12 + length
            if end + 4 > len(data):
                break   # a record cut short by a crash: everything before it is intact
            try:
                event = Event.FromString(data[pos + 12:end])
            except DecodeError:
                raise UserError('event file %s is corrupt at byte %d (not a TensorBoard record)' % (path, pos)) from None
            for value in event.summary.value:
                if value.HasField('simple_value'):
                    scalars[value.tag].append((event.step, value.simple_value))
            pos = end + 4
    return dict(scalars)
