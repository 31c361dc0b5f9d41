"""AdamW (Loshchilov & Hutter, ICLR 2019) registered as MXNet optimiser 'adamw'.

MXNet 1.9.1 has the fused op ``mx.nd.contrib.adamw_update`` but registers no optimiser for it.
Importing this module makes ``mx.gluon.Trainer(params, 'adamw', {...})`` work.
"""
import math

import mxnet as mx


@mx.optimizer.Optimizer.register
class AdamW(mx.optimizer.Optimizer):
    """Adam with decoupled weight decay, as ``torch.optim.AdamW``. At step t of a weight W:

        g = rescale_grad * grad  (clipped to clip_gradient)
        m = beta1 m + (1 - beta1) g,        v = beta2 v + (1 - beta2) g^2
        W = W - lr wd W - lr (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + epsilon)

    with lr = learning_rate (or the lr_scheduler's value) x lr_mult and wd = wd x wd_mult of W.
    The decay is not part of g, so Adam's normalisation does not rescale it.
    """

    def __init__(self, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-8, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon

    def create_state(self, index, weight):
        return (mx.nd.zeros(weight.shape, weight.context, dtype=weight.dtype),    # m
                mx.nd.zeros(weight.shape, weight.context, dtype=weight.dtype))    # v

    def update(self, index, weight, grad, state):
        self._update_count(index)
        lr = self._get_lr(index)
        wd = self._get_wd(index)
        t = self._index_update_count[index]
        # The op computes W -= eta (alpha m / (sqrt(v) + eps') + wd W) without bias correction;
        # alpha = sqrt(1 - beta2^t) / (1 - beta1^t) and eps' = eps sqrt(1 - beta2^t) make it exact.
        correction2 = math.sqrt(1 - self.beta2 ** t)
        mean, var = state
        mx.nd.contrib.adamw_update(weight, grad, mean, var, rescale_grad=self.rescale_grad,
                                   lr=correction2 / (1 - self.beta1 ** t), eta=lr, wd=wd,
                                   beta1=self.beta1, beta2=self.beta2, epsilon=self.epsilon * correction2,
                                   clip_gradient=self.clip_gradient or -1, out=weight)
