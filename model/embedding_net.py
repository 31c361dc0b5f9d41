"""Backbone trunk -> global pooling -> Dense(embed_dim) -> L2 normalisation (docs/official_setup.md)."""
import mxnet as mx
from mxnet.gluon import nn



class AvgMaxPool2D(mx.gluon.HybridBlock):
    """(B, C, h, w) -> (B, C, 1, 1): global average + global max pooling, as Proxy-Anchor's models."""

    def hybrid_forward(self, F, x):
        return F.Pooling(x, global_pool=True, pool_type='avg') + F.Pooling(x, global_pool=True, pool_type='max')


POOLINGS = {'avg': nn.GlobalAvgPool2D, 'avg+max': AvgMaxPool2D}


class EmbeddingNet(mx.gluon.HybridBlock):
    """``net(images (B, 3, H, W)) -> embeddings (B, embed_dim)``, unit L2 norm.

    ``backbone`` holds the trunk's parameters (their lr is scaled by --base_lr_mult); the head is
    ``pooling`` (--pooling: 'avg' or 'avg+max') and ``embedding_layer`` (Dense, Xavier magnitude 2,
    as the official model).
    """

    def __init__(self, backbone, embed_dim, ctx=mx.cpu(), pooling='avg', **kwargs):
        super().__init__(**kwargs)
        if pooling not in POOLINGS:
            raise ValueError('unknown pooling %r; choose one of %s' % (pooling, ', '.join(POOLINGS)))
        self.backbone = backbone
        with self.name_scope():
            self.pooling = POOLINGS[pooling]()
            self.embedding_layer = nn.Dense(embed_dim, weight_initializer=mx.init.Xavier(magnitude=2))
        self.embedding_layer.initialize(ctx=ctx)

    def hybrid_forward(self, F, x):
        return F.L2Normalization(self.embedding_layer(self.pooling(self.backbone(x))), mode='instance')
