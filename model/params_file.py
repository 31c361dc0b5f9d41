"""The header of an MXNet parameter file, read and bounded before MXNet's loader sees the file.

MXNet's ``mx.nd.load`` trusts the counts a file claims: 32 bytes claiming 2^24 arrays cost 4 GB
and 19 s before it fails, 85 bytes claiming a 2^31-byte name 2.4 GB. So every weight file this
project reads (``--init_from``, ``--pretrained_path``, the tools' ``--params``, a checkpoint's
``model``/``loss``/``optimizer.params``) is first walked here, with seeks rather than reads, and
refused unless every count and size it claims fits in the bytes the file holds, and every array is
dense float32 (a float16 or int8 file would otherwise be cast silently, all its weights 0).

The format, as ``mx.nd.save`` (MXNet 1.9.1, little-endian) writes it:

    uint64 0x112 (list magic), uint64 0 (reserved)
    uint64 N, then N arrays, each:
        uint32 0xF993FAC9 (NDArray V2 magic; 0xF993FACA: V3, NumPy shape semantics)
        int32 storage type (0: dense)
        int32 ndim, ndim x int64 dims (ndim 0: an empty array, nothing follows)
        int32 device type, int32 device id
        int32 dtype (0: float32, 1: float64, 2: float16, 3: uint8, 4: int32, 5: int8, 6: int64, ...)
        prod(dims) x itemsize bytes of data
    uint64 K (0, or N: one name per array), then K names, each: uint64 length, that many bytes
"""
import os
import struct

LIST_MAGIC = 0x112
ARRAY_MAGICS = (0xF993FAC9, 0xF993FACA)
FLOAT32 = 0
DTYPES = {0: ('float32', 4), 1: ('float64', 8), 2: ('float16', 2), 3: ('uint8', 1), 4: ('int32', 4),
          5: ('int8', 1), 6: ('int64', 8), 7: ('bool', 1), 12: ('bfloat16', 2)}
# Far more arrays, dimensions and name bytes than any model here has (ViT-S: 150 arrays of 4-d at
# most, names under 100 bytes), and far fewer than what makes the loader's bookkeeping costly.
MAX_ARRAYS = 100000
MAX_NDIM = 8
MAX_NAME = 4096
# The smallest entry: magic, storage type, ndim 1, one dim, device, dtype, 4 bytes of data.
_MIN_ENTRY = 4 + 4 + 4 + 8 + 8 + 4 + 4


class BadParamsFile(ValueError):
    """A file that is not an MXNet parameter file of dense float32 arrays (or claims more than it holds)."""


class _Reader:
    def __init__(self, f, size):
        self.f, self.size = f, size

    def remaining(self):
        return self.size - self.f.tell()

    def unpack(self, fmt, what):
        n = struct.calcsize(fmt)
        data = self.f.read(n)
        if len(data) != n:
            raise BadParamsFile('truncated (ends inside %s)' % what)
        return struct.unpack(fmt, data)

    def skip(self, n, what):
        if n > self.remaining():
            raise BadParamsFile('%s claims %d bytes but only %d remain of the file\'s %d (truncated or crafted)'
                                % (what, n, self.remaining(), self.size))
        self.f.seek(n, os.SEEK_CUR)


def read_header(path):
    """[(name, shape)] of the float32 arrays in MXNet parameter file ``path`` (names None when it
    was saved from a list); reads only the headers. BadParamsFile (a ValueError, without the path)
    when it is not such a file, claims more than it holds, or holds arrays of another dtype."""
    size = os.path.getsize(path)
    with open(path, 'rb') as f:
        r = _Reader(f, size)
        if size < 16:
            raise BadParamsFile('not an MXNet parameter file (%d bytes)' % size)
        magic, _ = r.unpack('<QQ', 'the file header')
        if magic != LIST_MAGIC:
            raise BadParamsFile('not an MXNet parameter file (magic %#x, expected %#x)' % (magic, LIST_MAGIC))
        count, = r.unpack('<Q', 'the array count')
        if count > min(MAX_ARRAYS, r.remaining() // _MIN_ENTRY):
            raise BadParamsFile('claims %d arrays, more than its %d bytes can hold' % (count, size))
        shapes = [_array(r, i) for i in range(count)]
        num_names, = r.unpack('<Q', 'the name count')
        if num_names not in (0, count):
            raise BadParamsFile('claims %d names for %d arrays' % (num_names, count))
        names = []
        for i in range(num_names):
            length, = r.unpack('<Q', 'name %d' % i)
            if length > MAX_NAME or length > r.remaining():
                raise BadParamsFile('name %d claims %d bytes (at most %d, and %d remain of the file)'
                                    % (i, length, MAX_NAME, r.remaining()))
            try:
                names.append(f.read(length).decode('utf-8'))
            except UnicodeDecodeError:
                raise BadParamsFile('name %d is not text' % i) from None
        if r.remaining():
            raise BadParamsFile('%d bytes follow its last entry' % r.remaining())
    return list(zip(names or [None] * count, shapes))


def _array(r, i):
    what = 'array %d' % i
    magic, stype, ndim = r.unpack('<Iii', what)
    if magic not in ARRAY_MAGICS:
        raise BadParamsFile('%s: not an NDArray of a format MXNet 1.9 writes (magic %#x)' % (what, magic))
    if stype != 0:
        raise BadParamsFile('%s is sparse (storage type %d); expected dense arrays' % (what, stype))
    if not 1 <= ndim <= MAX_NDIM:
        raise BadParamsFile('%s has %d dimensions (expected 1 to %d)' % (what, ndim, MAX_NDIM))
    shape = r.unpack('<%dq' % ndim, what)
    if min(shape) < 0:
        raise BadParamsFile('%s has a negative dimension %s' % (what, shape))
    _, _, dtype = r.unpack('<iii', what)
    if dtype != FLOAT32:
        raise BadParamsFile('%s holds %s numbers; expected float32 (a file of another precision would be cast '
                            'silently)' % (what, DTYPES.get(dtype, ('dtype %d' % dtype,))[0]))
    n = 4
    for d in shape:
        n *= d
    r.skip(n, '%s of shape %s' % (what, shape))
    return shape


def check_params_file(path, names=True):
    """read_header(path) with its arrays named (``names``: a model's or loss's parameters, which
    Gluon saves as a dict) and at least one; BadParamsFile otherwise. Returns the header."""
    header = read_header(path)
    if not header:
        raise BadParamsFile('holds no arrays')
    if names and header[0][0] is None:
        raise BadParamsFile('holds unnamed arrays (saved from a list): not the parameters of a network')
    return header
