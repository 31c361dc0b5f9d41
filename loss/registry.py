"""The losses by their --loss names, and the builder that gives each its flags."""
from .hphn_triplet import HPHNTripletLoss
from .lifted_structure import LiftedStructureLoss
from .multi_similarity import MultiSimilarityLoss
from .npair import NPairLoss
from .proxy_anchor import ProxyAnchorLoss
from .see_proxy_anchor import SEEProxyAnchorLoss
from .triplet import TripletLoss

LOSSES = {
    'hphn_triplet': HPHNTripletLoss,
    'triplet': TripletLoss,
    'lifted': LiftedStructureLoss,
    'npair': NPairLoss,
    'ms': MultiSimilarityLoss,
    'proxy_anchor': ProxyAnchorLoss,
    'see_proxy_anchor': SEEProxyAnchorLoss,
}


def build_loss(args, num_classes):
    """The loss ``args.loss`` with its flags (main.py's, or any object with those attributes).

    Every pair loss takes n_inner_pts, l2_norm and num_instances (EE); the proxy losses the number
    of training classes. A bad value raises the class's own ValueError; an unknown name KeyError.
    """
    proxies = dict(num_classes=num_classes, embed_dim=args.embed_dim, margin=args.pa_margin, alpha=args.pa_alpha)
    ee = dict(n_inner_pts=args.n_inner_pts, l2_norm=args.ee_l2norm, num_instances=args.num_instances)
    own = {
        'hphn_triplet': dict(ee, margin=args.margin, soft_margin=args.soft_margin, negative_grad=args.ee_negative_grad),
        'triplet': dict(ee, margin=args.margin),
        'lifted': dict(ee, margin=args.lifted_margin),
        'npair': dict(ee, l2_reg=args.npair_l2_reg),
        'ms': dict(ee, alpha=args.ms_alpha, beta=args.ms_beta, base=args.ms_base, epsilon=args.ms_epsilon),
        'proxy_anchor': proxies,
        'see_proxy_anchor': dict(proxies, n_expansion=args.n_expansion, lambda_=args.see_lambda,
                                 max_thresh=args.max_thresh, min_thresh=args.min_thresh, epochs=args.epochs),
    }
    return LOSSES[args.loss](**own[args.loss])
