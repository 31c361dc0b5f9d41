"""Brute-force NumPy references of SPEC sections 1 and 2, written loop by loop, independent of loss/."""
import numpy as np


def partner_index(i):
    return i + 1 if i % 2 == 0 else i - 1


def ee_points(e, n, l2_norm=True):
    """SPEC section 1: (B, d) -> ((n+1)B, d) originals, then group k = 1..n."""
    B = len(e)
    out = [row for row in e]
    for k in range(1, n + 1):
        for i in range(B):
            s = (k * e[partner_index(i)] + (n + 1 - k) * e[i]) / (n + 1)
            if l2_norm:
                s = s / np.sqrt(np.sum(s * s) + 1e-10)
            out.append(s)
    return np.array(out)


def dist(a, b):
    return np.sqrt(np.clip(a @ a + b @ b - 2 * a @ b, 1e-12, 1e12))


def all_distances(x):
    """D(x[a], x[b]) for every pair, one pair at a time."""
    return np.array([[dist(a, b) for b in x] for a in x])


def hphn_terms(e, y, n, l2_norm=True):
    """Per anchor (d_ap, d_an, whether the hardest negative point is synthetic); d_an = inf when none."""
    B = len(e)
    x = ee_points(e, n, l2_norm)
    labels = np.tile(y, n + 1)
    D = all_distances(x)
    out = []
    for i in range(B):
        d_ap = max(D[i, j] for j in range(B) if y[j] == y[i])
        best, synthetic = np.inf, False
        for g in range(n + 1):
            for b in range(len(x)):
                if labels[b] != y[i] and D[g * B + i, b] < best:
                    best, synthetic = D[g * B + i, b], b >= B
        out.append((d_ap, best, synthetic))
    return out


def hphn_loss(e, y, n, margin=0.2, soft_margin=False, l2_norm=True):
    """SPEC section 2, per anchor (B,)."""
    losses = []
    for d_ap, d_an, _ in hphn_terms(e, y, n, l2_norm):
        if soft_margin:
            losses.append(np.log1p(np.exp(d_ap - d_an)))
        else:
            losses.append(max(d_ap - d_an + margin, 0.0))
    return np.array(losses)


def mined_distance_matrix(e, n, l2_norm=True):
    """Dn[i, j] = min over a in G(i), b in G(j) of D(a, b), by brute force."""
    B = len(e)
    D = all_distances(ee_points(e, n, l2_norm))
    groups = [[g * B + i for g in range(n + 1)] for i in range(B)]
    return np.array([[min(D[a, b] for a in groups[i] for b in groups[j]) for j in range(B)]
                     for i in range(B)])


def numeric_grad(f, e, h=1e-6):
    """Central finite differences of the scalar f at e (float64)."""
    g = np.zeros_like(e)
    for idx in np.ndindex(*e.shape):
        old = e[idx]
        e[idx] = old + h
        up = f(e)
        e[idx] = old - h
        down = f(e)
        e[idx] = old
        g[idx] = (up - down) / (2 * h)
    return g
