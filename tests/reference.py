"""Brute-force NumPy references of docs/embedding_expansion.md, docs/mining.md and docs/pair_losses.md, written loop by loop, independent of loss/."""
import numpy as np


def partner_index(i):
    return i + 1 if i % 2 == 0 else i - 1


def ee_points(e, n, l2_norm=True):
    """docs/embedding_expansion.md: (B, d) -> ((n+1)B, d) originals, then group k = 1..n."""
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
    """docs/mining.md, per anchor (B,)."""
    losses = []
    for d_ap, d_an, _ in hphn_terms(e, y, n, l2_norm):
        if soft_margin:
            losses.append(np.log1p(np.exp(d_ap - d_an)))
        else:
            losses.append(max(d_ap - d_an + margin, 0.0))
    return np.array(losses)


def hphn_release(e, y, n, margin=0.2, soft_margin=False, l2_norm=True):
    """The release's formulation of docs/mining.md with its gradient: (loss (B,), d sum(loss) / d e).

    Explicit (n+1)B points, every synthetic point standing twice (s_k(i) = s_{n+1-k}(p(i)),
    bit-identical here as in the release), the full distance matrix, and the gradient of each min
    and max sent to every tied entry, as MXNet's reduce-min/max do. Written pair by pair.
    """
    B, d = e.shape
    x = ee_points(e, n, l2_norm)
    labels = np.tile(y, n + 1)
    D = all_distances(x)
    losses, gx = np.zeros(B), np.zeros_like(x)

    def add_distance_grad(a, b, g):
        if D[a, b] > 1e-6:       # the clip's floor passes no gradient
            gx[a] += g * (x[a] - x[b]) / D[a, b]
            gx[b] += g * (x[b] - x[a]) / D[a, b]

    for i in range(B):
        pos = [j for j in range(B) if y[j] == y[i]]
        d_ap = max(D[i, j] for j in pos)
        pairs = [(g * B + i, b) for g in range(n + 1) for b in range(len(x)) if labels[b] != y[i]]
        if not pairs:
            continue
        d_an = min(D[a, b] for a, b in pairs)
        z = d_ap - d_an
        if soft_margin:
            losses[i], slope = np.log1p(np.exp(z)), 1 / (1 + np.exp(-z))
        else:
            losses[i], slope = max(z + margin, 0.0), float(z + margin > 0)
        for j in pos:
            if D[i, j] == d_ap:
                add_distance_grad(i, j, slope)
        for a, b in pairs:
            if D[a, b] == d_an:
                add_distance_grad(a, b, -slope)
    # back through EE: x = e for the originals, s = v / sqrt(|v|^2 + eps) for the synthetic points
    ge = gx[:B].copy()
    for k in range(1, n + 1):
        for i in range(B):
            g, p = gx[k * B + i], partner_index(i)
            v = (k * e[p] + (n + 1 - k) * e[i]) / (n + 1)
            if l2_norm:
                r = np.sqrt(v @ v + 1e-10)
                g = g / r - v * (v @ g) / r ** 3
            ge[i] += g * (n + 1 - k) / (n + 1)
            ge[p] += g * k / (n + 1)
    return losses, ge


def mined_distance_matrix(e, n, l2_norm=True):
    """Dn[i, j] = min over a in G(i), b in G(j) of D(a, b), by brute force."""
    B = len(e)
    D = all_distances(ee_points(e, n, l2_norm))
    groups = [[g * B + i for g in range(n + 1)] for i in range(B)]
    return np.array([[min(D[a, b] for a in groups[i] for b in groups[j]) for j in range(B)]
                     for i in range(B)])


def mined_similarity_matrix(e, n, l2_norm=True):
    """Sn[i, j] = max over a in G(i), b in G(j) of a.b, by brute force."""
    B = len(e)
    x = ee_points(e, n, l2_norm)
    groups = [[g * B + i for g in range(n + 1)] for i in range(B)]
    return np.array([[max(x[a] @ x[b] for a in groups[i] for b in groups[j]) for j in range(B)]
                     for i in range(B)])


def distance_matrices(e, n, l2_norm=True):
    """(D, Dn): the originals' distances and the brute-force mined ones."""
    return all_distances(e), mined_distance_matrix(e, n, l2_norm)


def similarity_matrices(e, n, l2_norm=True):
    """(S, Sn): the originals' inner products and the brute-force mined ones."""
    return np.array([[a @ b for b in e] for a in e]), mined_similarity_matrix(e, n, l2_norm)


def triplet_loss(D, Dn, y, margin=0.2):
    """docs/pair_losses.md: mean over every (anchor, positive != anchor, negative) of the hinge; 0 if none."""
    B, terms = len(y), []
    for a in range(B):
        for p in range(B):
            for n in range(B):
                if p != a and y[p] == y[a] and y[n] != y[a]:
                    terms.append(max(D[a, p] - Dn[a, n] + margin, 0.0))
    return np.mean(terms) if terms else 0.0


def lifted_loss(D, Dn, y, margin=1.0):
    """Song et al. 2016 over unordered positive pairs i < j; 0 without positive pairs."""
    B, total, pairs = len(y), 0.0, 0
    for i in range(B):
        for j in range(i + 1, B):
            if y[i] != y[j]:
                continue
            s = sum(np.exp(margin - Dn[i, k]) for k in range(B) if y[k] != y[i])
            s += sum(np.exp(margin - Dn[j, l]) for l in range(B) if y[l] != y[j])
            J = np.log(s) + D[i, j] if s > 0 else -np.inf
            total += max(J, 0.0) ** 2
            pairs += 1
    return total / (2 * pairs) if pairs else 0.0


def npair_loss(e, S, Sn, y, l2_reg=0.002):
    """Sohn 2016: anchors 2k with positives 2k+1; negatives the positives of pairs of other classes."""
    B, terms = len(y), []
    for i in range(0, B, 2):
        s = sum(np.exp(Sn[i, j + 1] - S[i, i + 1]) for j in range(0, B, 2) if y[j] != y[i])
        terms.append(np.log(1 + s))
    return np.mean(terms) + l2_reg * np.mean([f @ f for f in e])


def ms_loss(S, Sn, y, alpha=2.0, beta=50.0, base=0.5, epsilon=0.1):
    """Wang et al. 2019 with epsilon pair mining; anchors with an empty mined set contribute 0."""
    B, total = len(y), 0.0
    for i in range(B):
        pos = [S[i, j] for j in range(B) if j != i and y[j] == y[i]]
        neg = [Sn[i, k] for k in range(B) if y[k] != y[i]]
        if not pos or not neg:
            continue
        kept_pos = [s for s in pos if s - epsilon < max(neg)]
        kept_neg = [s for s in neg if s + epsilon > min(pos)]
        if not kept_pos or not kept_neg:
            continue
        total += np.log(1 + sum(np.exp(-alpha * (s - base)) for s in kept_pos)) / alpha
        total += np.log(1 + sum(np.exp(beta * (s - base)) for s in kept_neg)) / beta
    return total / B


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
