"""Models built by name: ``get_model('googlenet', embed_dim=512, ...)``."""
import mxnet as mx

from .batchnorm import freeze_batchnorm
from .embedding_net import POOLINGS, EmbeddingNet
from .googlenet import googlenet_trunk
from .resnet50 import resnet50_trunk
from .vit import vit_small_patch16

BACKBONES = {
    'googlenet': googlenet_trunk,
    'resnet50': resnet50_trunk,
    'vit_small_patch16': vit_small_patch16,
}


def get_model(backbone, embed_dim, pretrained=True, pretrained_path=None, ctx=(mx.cpu(),), pooling='avg',
              bn_freeze=False):
    """A hybridised EmbeddingNet on ``ctx`` (a list of contexts) with the named backbone trunk.

    ``pooling``: 'avg' or 'avg+max' (--pooling); ``bn_freeze``: the trunk's BatchNorm layers keep
    their running statistics (--bn_freeze; ViT has none).
    """
    if backbone not in BACKBONES:
        raise ValueError('unknown backbone %r; choose one of %s' % (backbone, ', '.join(BACKBONES)))
    ctx = list(ctx)
    net = EmbeddingNet(BACKBONES[backbone](pretrained, pretrained_path, ctx), embed_dim, ctx=ctx, pooling=pooling)
    if bn_freeze:
        freeze_batchnorm(net.backbone)
    net.hybridize(static_alloc=True)
    return net

