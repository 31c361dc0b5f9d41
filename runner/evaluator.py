"""The evaluator of a training run: embed a split with the network, then score it (metrics/evaluation.py).

The release splits its runner into a trainer and an evaluator; this is the evaluator. A split is
'test' (In-Shop: its queries searched in its gallery) or 'val' (held-out training classes).
"""
import os
import sys

import numpy as np

from metrics.evaluation import RETRIEVAL_METRICS, evaluate, evaluate_query_gallery
from utils.atomic import atomic_file
from utils.errors import UserError


class NonFiniteEmbeddings(ValueError):
    """The network gave NaN or infinite embeddings: its weights diverged."""


def extract_embeddings(net, loader, ctx):
    """Embeddings (n, embed_dim) float32 and labels (n,) of a loader, in its order;
    NonFiniteEmbeddings when any is NaN or infinite."""
    import mxnet as mx
    from tqdm import tqdm
    feats, labels = [], []
    for images, y in tqdm(loader, desc='embeddings', leave=False, file=sys.stdout, dynamic_ncols=True):
        parts = mx.gluon.utils.split_and_load(images, ctx, even_split=False)
        feats.extend(net(x).asnumpy() for x in parts)
        labels.append(y.asnumpy())
    feats = np.concatenate(feats)
    if not np.isfinite(feats).all():
        raise NonFiniteEmbeddings('the embeddings of %d of %d images are NaN or infinite'
                                  % ((~np.isfinite(feats).all(axis=1)).sum(), len(feats)))
    return feats, np.concatenate(labels)


def check_expansion_sizes(loaders, args):
    """ValueError when --eval_qe or --eval_dba asks for more neighbours than an evaluated split
    has, so that it stops the run before training rather than at the first evaluation."""
    from metrics.query_expansion import check_expansion
    if loaders.gallery is not None:
        check_expansion(args.eval_qe, args.eval_dba, len(loaders.gallery.labels), False, ('eval_qe', 'eval_dba'))
    for split in (loaders.test, loaders.val):
        if split is not None:
            check_expansion(args.eval_qe, args.eval_dba, len(split.labels), True, ('eval_qe', 'eval_dba'))


def evaluate_net(net, loaders, ctx, args, split='test'):
    """(metrics, embeddings) of one split: ``split`` 'test' (In-Shop: query against gallery) or 'val'.

    args: the run's flags (eval_metrics, recallk, seed). embeddings: {name: (embeddings (n, d),
    labels (n,))} of the sets evaluated. Clustering metrics do not apply to a query/gallery split.
    """
    from metrics.query_expansion import evaluate_expanded
    on = ctx[0] if ctx[0].device_type == 'gpu' else None
    expand = dict(qe=args.eval_qe, dba=args.eval_dba, metrics=args.eval_metrics, recallk=args.recallk, ctx=on)
    if split == 'test' and loaders.gallery is not None:
        query = extract_embeddings(net, loaders.query.loader, ctx)
        gallery = extract_embeddings(net, loaders.gallery.loader, ctx)
        metrics = [m for m in args.eval_metrics if m in RETRIEVAL_METRICS]
        out = evaluate_query_gallery(*query, *gallery, recallk=args.recallk, metrics=metrics, ctx=on)
        if args.eval_qe or args.eval_dba:     # --eval_qe / --eval_dba: extra keys such as R@1_qe_dba
            out.update(evaluate_expanded(*gallery, query_emb=query[0], query_labels=query[1], **expand))
        return out, {'query': query, 'gallery': gallery}
    emb, labels = extract_embeddings(net, getattr(loaders, split).loader, ctx)
    out = evaluate(emb, labels, metrics=args.eval_metrics, recallk=args.recallk, ctx=on, seed=args.seed)
    if args.eval_qe or args.eval_dba:
        out.update(evaluate_expanded(emb, labels, **expand))
    return out, {split: (emb, labels)}


def save_embeddings(embeddings, folder):
    """NAME_embeddings.npy and NAME_labels.npy per set, for ``python3 -m tools.evaluate``; each
    written to a temporary name, fsynced and renamed. UserError naming the file when a write fails."""
    for name, (emb, labels) in embeddings.items():
        for suffix, array in (('embeddings', emb), ('labels', labels)):
            path = os.path.join(folder, '%s_%s.npy' % (name, suffix))
            try:
                os.makedirs(folder, exist_ok=True)
                with atomic_file(path) as f:
                    np.save(f, array)
            except OSError as exc:
                raise UserError('cannot write %s: %s' % (path, exc.strerror or exc)) from exc
