"""How far PIL's bilinear resize moves an exported model's embeddings from ours (OpenCV's).

    python3 bench/pil_resize.py MODEL.onnx IMAGE_DIR [--images 100]

Embeds --images images of IMAGE_DIR (evenly spaced in tools.embed's order) with onnxruntime twice:
preprocessed as the model's metadata says (tools.embed_onnx: cv2.resize, INTER_LINEAR), and with
PIL's Image.resize(BILINEAR) in its place (same scale, mean, std). Prints the largest and mean
absolute difference of the inputs (normalised units) and the min / median / max cosine between the
two embeddings of each image.
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools.embed import list_images  # noqa: E402
from tools.embed_onnx import load_session  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('model')
    p.add_argument('image_dir')
    p.add_argument('--images', type=int, default=100)
    args = p.parse_args()
    session, ours = load_session(args.model)
    meta = session.get_modelmeta().custom_metadata_map
    mean, std = (np.array(meta[key].split(','), np.float32) for key in ('mean', 'std'))
    paths = list_images(args.image_dir)
    paths = paths[::max(1, len(paths) // args.images)][:args.images]

    def pil(path):
        image = Image.open(path).convert('RGB').resize((ours.size, ours.size), Image.BILINEAR)
        return ((np.asarray(image, np.float32) / np.float32(255) - mean) / std).transpose(2, 0, 1)

    x_ours, x_pil = np.stack([ours(p) for p in paths]), np.stack([pil(p) for p in paths])
    e_ours, e_pil = (session.run(None, {'data': x})[0] for x in (x_ours, x_pil))
    cosine = (e_ours * e_pil).sum(1)
    print('%d images at %d px: inputs differ by %.3f at most, %.3f on average; cosine min %.4f median %.4f '
          'max %.4f' % (len(paths), ours.size, np.abs(x_ours - x_pil).max(), np.abs(x_ours - x_pil).mean(),
                        cosine.min(), np.median(cosine), cosine.max()))


if __name__ == '__main__':
    main()
