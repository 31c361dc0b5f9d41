"""Backbone trunk -> global average pooling -> Dense(embed_dim) -> L2 normalisation (SPEC section 4)."""
import mxnet as mx
from mxnet.gluon import nn


class EmbeddingNet(mx.gluon.HybridBlock):
    """``net(images (B, 3, H, W)) -> embeddings (B, embed_dim)``, unit L2 norm.

    ``backbone`` holds the trunk's parameters (their lr is scaled by --base_lr_mult); the head is
    ``pooling`` and ``embedding_layer`` (Dense, Xavier magnitude 2, as the official model).
    """

    def __init__(self, backbone, embed_dim, ctx=mx.cpu(), **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        with self.name_scope():
            self.pooling = nn.GlobalAvgPool2D()
            self.embedding_layer = nn.Dense(embed_dim, weight_initializer=mx.init.Xavier(magnitude=2))
        self.embedding_layer.initialize(ctx=ctx)

    def hybrid_forward(self, F, x):
        return F.L2Normalization(self.embedding_layer(self.pooling(self.backbone(x))), mode='instance')
