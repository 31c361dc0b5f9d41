"""A trained EmbeddingNet as an ONNX model that onnxruntime runs without MXNet.

MXNet 1.9.1's own exporter (``mx.onnx``) translates the graph; this module adds what it lacks for
our model:

- a converter for the head's ``L2Normalization(mode='instance')`` (MXNet's refuses every mode but
  'channel'): MXNet's own formula, x / sqrt(sum(x^2) + eps) over all but the batch axis, eps the
  operator's (1e-10), so the values match to float rounding;
- opset 13 declared (the exporter's newest translations; it would otherwise declare the onnx
  package's newest opset), and the lowest IR version that carries it, so older runtimes load it;
- the weights only as initializers: the exporter also lists every weight as a graph input, which
  lets a caller override it and so keeps onnxruntime from folding constants into the layers
  (1.3-1.45x the CPU time when left in, BENCHMARKS.md);
- one input ``data`` (batch, 3, S, S), the batch dynamic, and one output ``embedding``
  (batch, embed_dim);
- the preprocessing in the model's ``metadata_props`` (preprocessing_metadata), so that the file
  alone says how to feed it (tools.embed_onnx reads it).
"""
import numpy as np

OPSET = 13
INPUT, OUTPUT = 'data', 'embedding'


class UnsupportedOperator(Exception):
    """An operator of the MXNet graph that MXNet's exporter cannot translate. ``op``: its type."""

    def __init__(self, op, reason):
        super().__init__('%s (%s)' % (op, reason))
        self.op, self.reason = op, reason


def preprocessing_metadata(image_size, embed_dim):
    """The metadata_props (str -> str) that say how an image becomes the model's input, exactly as
    data.transforms.test_transform(image_size) after data.image_list.read_rgb does it."""
    from data.transforms import IMAGENET_MEAN, IMAGENET_STD

    def floats(values):
        return ','.join(np.format_float_positional(v) for v in values)   # shortest exact float32
    return {
        'input_size': str(int(image_size)),
        'channel_order': 'RGB',
        'resize': 'cv2.INTER_LINEAR',
        'scale': '1/255',
        'mean': floats(IMAGENET_MEAN),
        'std': floats(IMAGENET_STD),
        'embedding_size': str(int(embed_dim)),
        'preprocessing': (
            'decode with OpenCV (cv2.imread IMREAD_COLOR: greyscale gives 3 equal channels), convert '
            'BGR to channel_order, resize the whole image to input_size x input_size with OpenCV '
            'bilinear (cv2.resize, cv2.INTER_LINEAR; aspect ratio not kept, no crop; PIL\'s bilinear '
            'gives other pixels), float32 x * scale, then (x - mean) / std per channel, channels first: '
            'input data (batch, 3, input_size, input_size) float32'),
        'output': 'embedding (batch, embedding_size) float32, unit L2 norm: compare by dot product',
    }


def _l2_normalization(node, **kwargs):
    """MXNet node L2Normalization -> ONNX nodes; 'instance' mode here, the others as MXNet does."""
    from mxnet.onnx.mx2onnx._op_translations import _op_translations_opset12 as mx_ops
    from onnx.helper import make_node
    name, (x,), attrs = mx_ops.get_inputs(node, kwargs)
    if attrs.get('mode', 'instance') != 'instance':
        return mx_ops.convert_l2normalization(node, **kwargs)
    dtype = mx_ops.get_input_dtypes(node, kwargs)[0]
    mx_ops.create_const_scalar_node(name + '_eps', np.dtype(dtype).type(float(attrs.get('eps', 1e-10))),
                                    kwargs)
    mx_ops.create_tensor([1], name + '_axes', kwargs['initializer'])
    # Mul + ReduceSum rather than ReduceSumSquare: the exporter checks the graph against the onnx
    # package's newest opset too, where ReduceSumSquare takes its axes differently from opset 13.
    return [make_node('Shape', [x], [name + '_shape']),
            make_node('Flatten', [x], [name + '_flat'], axis=1),
            make_node('Mul', [name + '_flat', name + '_flat'], [name + '_square']),
            make_node('ReduceSum', [name + '_square', name + '_axes'], [name + '_sum'], keepdims=1),
            make_node('Add', [name + '_sum', name + '_eps'], [name + '_sum_eps']),
            make_node('Sqrt', [name + '_sum_eps'], [name + '_norm']),
            make_node('Div', [name + '_flat', name + '_norm'], [name + '_unit']),
            make_node('Reshape', [name + '_unit', name + '_shape'], [name], name=name)]


def _weight_or_input(node, **kwargs):
    """MXNet variable -> ONNX: a weight as an initializer of raw bytes (the exporter's own lists
    every float, 30 s for a GoogLeNet with the pure-Python protobuf 3.20 of Python 3.11), the
    input as the exporter does."""
    from mxnet.onnx.mx2onnx._op_translations import _op_translations_opset12 as mx_ops
    from onnx import helper, mapping
    if kwargs['is_input']:
        return mx_ops.convert_weights_and_inputs(node, **kwargs)
    name = node['name']
    array = np.ascontiguousarray(kwargs['weights'][name])
    dtype = mapping.NP_TYPE_TO_TENSOR_TYPE[array.dtype]
    kwargs['initializer'].append(helper.make_tensor(name, dtype, array.shape, array.tobytes(), raw=True))
    return [helper.make_tensor_value_info(name, dtype, array.shape)], (array.dtype,)


def _graph(sym, params, image_size):
    """MXNet's exporter on sym: the ONNX GraphProto, or UnsupportedOperator naming the operator."""
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph
    from onnx import TensorProto

    from utils.errors import first_line
    MXNetGraph.register('L2Normalization', OPSET)(_l2_normalization)
    MXNetGraph.register('null', OPSET)(_weight_or_input)
    translate = MXNetGraph.convert_layer

    def convert_layer(node, **kwargs):
        # The exporter's own errors do not say which operator failed.
        try:
            return translate(node, **kwargs)
        except Exception as exc:
            raise UnsupportedOperator(node['op'], first_line(exc)) from exc

    shape = (1, 3, image_size, image_size)
    MXNetGraph.convert_layer = staticmethod(convert_layer)
    try:
        return MXNetGraph().create_onnx_graph_proto(sym, params, [shape], [TensorProto.FLOAT],
                                                    opset_version=OPSET, dynamic=True,
                                                    dynamic_input_shapes=[(None,) + shape[1:]])
    finally:
        MXNetGraph.convert_layer = staticmethod(translate)


def to_onnx(net, image_size, metadata):
    """net (a hybridised EmbeddingNet: (B, 3, S, S) -> (B, d), S = image_size) as an
    onnx.ModelProto with ``metadata`` (str -> str) as its metadata_props.

    Raises UnsupportedOperator when the graph holds an operator the exporter cannot translate.
    """
    import mxnet as mx
    import onnx
    from onnx import helper
    embed_dim = net(mx.nd.zeros((1, 3, image_size, image_size))).shape[1]
    sym = net(mx.sym.var(INPUT))
    params = {p.name: p.data() for p in net.collect_params().values()}
    graph = _graph(sym, params, image_size)
    weights = {w.name for w in graph.initializer}
    inputs = [v for v in graph.input if v.name not in weights]
    del graph.input[:]
    graph.input.extend(inputs)
    (output,) = graph.output
    for node in graph.node:
        node.output[:] = [OUTPUT if o == output.name else o for o in node.output]
    output.name = OUTPUT
    for value, dims in ((graph.input[0], ('batch', 3, image_size, image_size)), (output, ('batch', embed_dim))):
        for dim, size in zip(value.type.tensor_type.shape.dim, dims):
            dim.Clear()
            if isinstance(size, str):
                dim.dim_param = size
            else:
                dim.dim_value = size
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)],
                              producer_name='mxnet %s mx.onnx' % mx.__version__)
    model.ir_version = helper.find_min_ir_version_for(model.opset_import)
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    return model
