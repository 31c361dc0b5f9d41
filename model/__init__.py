"""Models built by name: ``get_model('googlenet', embed_dim=512, ...)``."""
import mxnet as mx

from utils.errors import UserError

from .embedding_net import EmbeddingNet
from .googlenet import googlenet_trunk

BACKBONES = {
    'googlenet': googlenet_trunk,
}


def get_model(backbone, embed_dim, pretrained=True, pretrained_path=None, ctx=(mx.cpu(),)):
    """A hybridised EmbeddingNet on ``ctx`` (a list of contexts) with the named backbone trunk."""
    if backbone not in BACKBONES:
        raise UserError('unknown backbone %r (--backbone); choose one of %s' % (backbone, ', '.join(BACKBONES)))
    ctx = list(ctx)
    net = EmbeddingNet(BACKBONES[backbone](pretrained, pretrained_path, ctx), embed_dim, ctx=ctx)
    net.hybridize(static_alloc=True)
    return net
