"""What an image file's header says, checked before the file is decoded.

Decoding costs memory in proportion to the pixels a header claims, not to the file's size: a
425 KB PNG of 20000 x 20000 costs 2.7 GB in OpenCV, and a header over OpenCV's own limit (2^30
pixels) raises cv2.error. And libjpeg decodes a truncated JPEG without an error (the missing rows
grey), printing only "Premature end of JPEG file" without the file's name. So the size is read
from the header (Pillow opens files lazily: it reads the header, no pixels), and a JPEG must end
with its end-of-image marker, a PNG with its IEND chunk.
"""
import os

# 8192 x 8192 (--max_image_pixels): above a camera's photograph (12 to 50 megapixels), a decoded
# image of 200 MB at most.
DEFAULT_MAX_PIXELS = 1 << 26
# The tail searched for the end marker: writers may pad a file after it (never this much).
_TAIL = 4096
_END_MARKERS = {'JPEG': b'\xff\xd9', 'PNG': b'IEND\xaeB`\x82'}


class BadImageFile(ValueError):
    """An image file whose header claims too many pixels, or that was cut short."""


def check_image_file(path, max_pixels):
    """BadImageFile (a ValueError, without the path) when the image in ``path`` has more than
    ``max_pixels`` pixels by its header (or no header Pillow can read), is larger than such an image
    can be, or is a JPEG or PNG that does not end with its end marker."""
    from PIL import Image
    pillow_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None       # Pillow's own bomb check would override max_pixels
    try:
        with Image.open(path) as image:
            (width, height), kind = image.size, image.format
    except (OSError, ValueError, SyntaxError):
        # without a size the decoder could allocate anything (OpenCV: up to 2^30 pixels)
        raise BadImageFile('not a readable image file (no header of a format Pillow knows, '
                           'e.g. JPEG, PNG, BMP, PPM, TIFF, WebP)') from None
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit
    # 8 bytes per pixel: 16-bit RGBA uncompressed; a file larger than that holds something else,
    # and would be read whole
    if os.path.getsize(path) > 8 * max_pixels + (1 << 20):
        raise BadImageFile('the file holds %d bytes, more than an image of --max_image_pixels %d can'
                           % (os.path.getsize(path), max_pixels))
    if width * height > max_pixels:
        raise BadImageFile('its header claims %d x %d = %d pixels, over --max_image_pixels %d '
                           '(raise it if the image is genuine)' % (width, height, width * height, max_pixels))
    end = _END_MARKERS.get(kind)
    if end:
        with open(path, 'rb') as f:
            f.seek(max(0, os.path.getsize(path) - _TAIL))
            if end not in f.read():
                raise BadImageFile('the %s file is truncated (it does not end with its end marker)' % kind)
