"""ResNet-50 trunk (gluoncv resnet50_v1b: stride 2 in the 3x3 convolutions), conv1 .. layer4.

The backbone of Proxy-Anchor's and SEE's CNN results; the trunk works at any input size >= 32 px.
"""
import mxnet as mx
from gluoncv.model_zoo import resnet50_v1b

from .trunk import classifier_trunk

TRUNK = ('conv1', 'bn1', 'relu', 'maxpool', 'layer1', 'layer2', 'layer3', 'layer4')


def resnet50_trunk(pretrained=True, pretrained_path=None, ctx=mx.cpu()):
    """HybridSequential (B, 3, H, W) -> (B, 2048, H/32, W/32): ImageNet weights or He-normal init."""
    return classifier_trunk(resnet50_v1b(pretrained=False), TRUNK, 'resnet50_v1b', 'resnet50', pretrained,
                            pretrained_path, ctx)
