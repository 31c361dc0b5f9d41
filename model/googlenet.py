"""GoogLeNet trunk (gluoncv), layers conv1 .. inception5b, as the official EE model uses it.

gluoncv's classifier ends in a fixed 7x7 average pool; the trunk alone, followed by global
pooling in EmbeddingNet, works at any input size >= 32 px.
"""
import mxnet as mx
from gluoncv.model_zoo import googlenet

from .trunk import classifier_trunk

TRUNK = ('conv1', 'maxpool1', 'conv2', 'conv3', 'maxpool2', 'inception3a', 'inception3b', 'maxpool3',
         'inception4a', 'inception4b', 'inception4c', 'inception4d', 'inception4e', 'maxpool4',
         'inception5a', 'inception5b')


def googlenet_trunk(pretrained=True, pretrained_path=None, ctx=mx.cpu()):
    """HybridSequential (B, 3, H, W) -> (B, 1024, H/32, W/32): ImageNet weights or He-normal init."""
    return classifier_trunk(googlenet(pretrained=False, pretrained_base=False), TRUNK, 'googlenet', 'googlenet',
                            pretrained, pretrained_path, ctx)
