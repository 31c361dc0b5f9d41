"""--bn_freeze: BatchNorm normalises with its running statistics in training too, as Proxy-Anchor does."""
from mxnet.gluon import nn


def freeze_batchnorm(block):
    """Make every BatchNorm in ``block`` use its running mean and variance and stop updating them.

    gamma and beta still learn (Proxy-Anchor puts its BatchNorm2d layers in eval mode, no more).
    Small metric-learning batches of few classes give poor batch statistics; ImageNet's are kept.
    Call it before hybridising: the flag is read when the graph is built.
    """
    def freeze(layer):
        if isinstance(layer, nn.BatchNorm):
            layer._kwargs['use_global_stats'] = True   # the operator's flag; Gluon has no setter for it
    block.apply(freeze)
