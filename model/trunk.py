"""A backbone trunk cut from a gluoncv ImageNet classifier."""
import mxnet as mx

from .weights import load_into, pretrained_file


def classifier_trunk(net, layers, store_name, backbone, pretrained, pretrained_path, ctx):
    """The ``layers`` (attribute names, in order) of gluoncv classifier ``net`` as one HybridSequential.

    Weights: ImageNet from gluoncv's store file ``store_name`` or ``pretrained_path`` (the whole
    classifier's parameters), or, with neither, He-normal initialisation (random init from scratch).
    """
    if pretrained or pretrained_path:
        load_into(net, pretrained_file(store_name, pretrained_path), backbone, ctx)
    else:
        net.initialize(mx.init.Xavier(rnd_type='gaussian', factor_type='out', magnitude=2), ctx=ctx)
    trunk = mx.gluon.nn.HybridSequential(prefix='')
    for name in layers:
        trunk.add(getattr(net, name))
    return trunk
