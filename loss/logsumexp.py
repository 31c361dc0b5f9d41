"""Masked, numerically stable log-sum-exp: the soft maximum of the lifted, N-pair and MS losses."""

# Stands in for the logit of an excluded entry: exp of it minus the row's maximum underflows to 0.
MASKED = -1e12


def masked_logsumexp(F, x, mask, plus_one=False):
    """log(sum_j mask[i, j] exp(x[i, j])) -> (R,) from x, mask (R, C); plus_one adds exp(0) = 1 inside.

    Excluded entries are replaced by MASKED before exp, never multiplied by 0 after it (exp may
    have overflowed to inf by then). A row without any entry gives 0 with plus_one (log 1), else
    about MASKED: a very negative number standing in for log 0 = -inf.
    """
    x = F.where(mask, x, F.ones_like(x) * MASKED)
    # The shift cancels out of the value and of the gradient, so it needs no gradient of its own.
    top = F.BlockGrad(F.max(x, axis=1))
    if plus_one:
        top = F.relu(top)
    total = F.sum(F.exp(F.broadcast_sub(x, top.expand_dims(1))), axis=1)
    if plus_one:
        total = total + F.exp(-top)
    return top + F.log(total)
