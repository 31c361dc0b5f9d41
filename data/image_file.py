"""One image file to an RGB array: header checked first, bytes decoded by OpenCV. No MXNet, so that
tools.embed_onnx reads images exactly as training and tools.embed do."""
import os

import cv2
import numpy as np

from utils.errors import UserError

from .image_header import DEFAULT_MAX_PIXELS, BadImageFile, check_image_file

# OpenCV's own thread pool can deadlock in DataLoader workers forked from a process that
# already used it, and the workers already give us parallelism.
cv2.setNumThreads(0)

# Images of more pixels by their header are refused before decoding (--max_image_pixels; main.py
# sets it before any loader or worker exists, so forked workers inherit it, as OpenCV's own limit).
MAX_PIXELS = DEFAULT_MAX_PIXELS


def set_max_pixels(max_pixels):
    global MAX_PIXELS
    MAX_PIXELS = int(max_pixels)


def read_rgb(path):
    """Decode an image file to an HxWx3 uint8 RGB array (greyscale becomes 3 equal channels).

    Raises UserError naming the path when the file is missing, its header claims more than
    MAX_PIXELS pixels, it is truncated, or it cannot be decoded.  The bytes are read by Python and
    decoded by cv2.imdecode: cv2.imread takes the name itself, and one that is not valid UTF-8 (a
    Latin-1 ``caf\xe9.png``) crashes OpenCV's binding.
    """
    if not os.path.isfile(path):        # a FIFO or device would block or never end
        raise UserError("cannot decode image %s: %s" % (path, 'not a regular file' if os.path.exists(path)
                                                         else 'file does not exist'))
    try:
        check_image_file(path, MAX_PIXELS)
        with open(path, 'rb') as f:
            data = np.frombuffer(f.read(), np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except BadImageFile as exc:
        raise UserError("cannot decode image %s: %s" % (path, exc)) from exc
    except OSError as exc:
        raise UserError("cannot decode image %s: %s" % (path, exc.strerror)) from exc
    except cv2.error as exc:        # e.g. a header over OpenCV's own pixel limit
        raise UserError("cannot decode image %s: OpenCV refuses it (%s)"
                        % (path, str(exc).strip().splitlines()[-1][:200])) from exc
    if image is None:
        # cv2.imread signals unreadable, truncated or unsupported files only by returning None.
        raise UserError("cannot decode image %s: not a readable image file (corrupt or unsupported format)" % path)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
