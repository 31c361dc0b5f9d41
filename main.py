"""Train and evaluate deep metric learning with Embedding Expansion (Ko & Gu, CVPR 2020).

    python3 main.py                       # offline quick run: EE + HPHN triplet on scikit-learn's digits
    python3 main.py --gpu_idx=0 --data_name=cars196 --data_dir=datasets/CARS196 ...   # the paper's setting

Flags and defaults follow the official release (SPEC section 4); a data set may bring defaults of
its own for flags the command line does not set (digits: a one-minute CPU schedule).
"""
import argparse
import os
import random
import sys

import numpy as np

from utils.errors import UserError


def str2bool(s):
    value = s.strip().lower()
    if value in ('true', 't', 'yes', 'y', '1'):
        return True
    if value in ('false', 'f', 'no', 'n', '0'):
        return False
    raise argparse.ArgumentTypeError('expected true or false, got %r' % s)


def int_list(s):
    try:
        values = [int(v) for v in s.split(',') if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError('expected comma-separated positive integers, got %r' % s)
    return values


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one UserError line, like every other bad input (no usage dump)."""

    def error(self, message):
        raise UserError(message + ' (see --help)')


def build_parser():
    p = OneLineParser(description='Embedding Expansion (CVPR 2020) in MXNet Gluon',
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a('--config', default=None,
      help='a file of main.py flags (one --flag=value per line, # comments); the command line overrides it')
    # data
    a('--data_name', default='digits',
      help='digits (offline, bundled) | cars196 (official: car196) | cub200 | sop | inshop | folder')
    a('--data_dir', default='./datasets/CARS196', help='root of the data set release files')
    a('--train_class_ratio', default=0.5, type=float,
      help='folder: the first this fraction of the classes (sorted by path) train, the rest test')
    a('--val_class_ratio', default=0.0, type=float,
      help='hold out this fraction of the training classes and choose the best epoch on them; '
           '0: choose on the test set, as the release does')
    a('--check_images', action='store_true', help='decode every image once before training')
    a('--skip_bad_images', action='store_true',
      help='leave out images that cannot be decoded (with a warning) instead of stopping')
    a('--cache_images', action='store_true',
      help='decode every image once and keep it resized in shared memory (README: sizes; for GPUs)')
    a('--image_size', default=227, type=int, help='width and height of input images')
    a('--batch_size', default=128, type=int, help='images per training batch')
    a('--num_instances', default=32, type=int, help='images per class in a batch (even with EE)')
    a('--num_workers', default=10, type=int, help='DataLoader worker processes (0: in the main process)')
    # model
    a('--backbone', default='googlenet', help='backbone trunk from the model registry')
    a('--embed_dim', default=512, type=int, help='embedding size')
    a('--pretrained', default=True, type=str2bool, help='start from ImageNet weights (false: random init)')
    a('--pretrained_path', default=None, help='ImageNet weight file to use instead of gluoncv\'s store')
    a('--pooling', default='avg', choices=('avg', 'avg+max'),
      help='global pooling of the trunk\'s features (avg+max: their sum, as Proxy-Anchor\'s code)')
    a('--bn_freeze', default=False, type=str2bool,
      help='the trunk\'s BatchNorm layers keep their running statistics (Proxy-Anchor\'s setting)')
    # loss
    a('--loss', default='hphn_triplet',
      help='hphn_triplet (official spelling hphn-triplet) | triplet | lifted | npair | ms | proxy_anchor | '
           'see_proxy_anchor')
    a('--n_inner_pts', default=2, type=int, help='synthetic points per pair (Embedding Expansion); 0: no EE')
    a('--ee_l2norm', default=True, type=str2bool, help='L2-normalise the synthetic points')
    a('--margin', default=1e-5, type=float, help='triplet margin (hphn_triplet and triplet)')
    a('--ee_negative_grad', default='release', choices=('release', 'exact'),
      help='hphn_triplet with EE: release doubles the gradient of d_an when the hardest negative is a '
           'synthetic point, as the official code does (it stores every synthetic point twice); exact: '
           'the derivative of the loss as written. Values are the same')
    a('--soft_margin', default=False, type=str2bool,
      help='log(1 + exp(d_ap - d_an)) instead of the hinge (the official main.py ignored this flag)')
    a('--lifted_margin', default=1.0, type=float, help='lifted structure margin')
    a('--npair_l2_reg', default=0.002, type=float, help='N-pair: weight of the embeddings\' squared norm')
    a('--ms_alpha', default=2.0, type=float, help='Multi-Similarity: positive scale alpha')
    a('--ms_beta', default=50.0, type=float, help='Multi-Similarity: negative scale beta')
    a('--ms_base', default=0.5, type=float, help='Multi-Similarity: similarity offset lambda')
    a('--ms_epsilon', default=0.1, type=float, help='Multi-Similarity: mining margin epsilon')
    a('--pa_margin', default=0.1, type=float, help='Proxy-Anchor margin delta')
    a('--pa_alpha', default=32.0, type=float, help='Proxy-Anchor scale alpha')
    a('--proxy_lr_mult', default=100.0, type=float, help='learning-rate multiplier of the proxies')
    a('--n_expansion', default=8, type=int, help='SEE: synthetic points per selected embedding')
    a('--see_lambda', default=0.2, type=float, help='SEE: weight lambda of the synthetic Proxy-Anchor term')
    a('--max_thresh', default=0.4, type=float, help='SEE: final fraction of the batch expanded')
    a('--min_thresh', default=0.0, type=float, help='SEE: initial fraction of the batch expanded')
    a('--warmup_epochs', default=0, type=int,
      help='train only the embedding layer (and proxies) for this many epochs, the trunk frozen')
    # optimisation
    a('--optim', default='adam', choices=('adam', 'adamw', 'sgd'),
      help='optimiser (adamw: decoupled weight decay; sgd uses --momentum)')
    a('--lr', default=1e-4, type=float, help='base learning rate')
    a('--wd', default=5e-4, type=float, help='weight decay')
    a('--momentum', default=0.9, type=float, help='momentum, with --optim sgd')
    a('--base_lr_mult', default=1.0, type=float, help='learning-rate multiplier of the backbone trunk')
    a('--lr_decay_factor', default=0.5, type=float, help='learning-rate factor at each decay epoch')
    a('--lr_decay_epochs', default='10,20,40,80', type=int_list, help='epochs at which the lr decays')
    a('--epochs', default=5000, type=int,
      help='training epochs; an epoch is (training classes x num_instances) images, as in the release')
    a('--start_epoch', default=0, type=int,
      help='first epoch; with --resume, the checkpoint to load; without, it only shifts the epoch counter '
           'and lr schedule, as in the release')
    a('--seed', default=0, type=int, help='random seed (numpy, random, mxnet)')
    # evaluation and logging
    a('--eval_epoch_term', default=50, type=int, help='evaluate every this many epochs')
    a('--recallk', default='1,2,4,8', type=int_list, help='K values of Recall@K')
    a('--eval_metrics', default='recall,nmi',
      help='comma-separated subset of recall, map_at_r, r_precision, nmi, f1')
    a('--select_metric', default=None,
      help='the metric that chooses the best epoch, e.g. R@1, MAP@R, NMI (default: R@K of the first --recallk, '
           'or the first of --eval_metrics without recall)')
    a('--summary_step', default=10, type=int, help='log loss and lr every this many iterations')
    a('--save_embeddings', action='store_true',
      help='write the test embeddings and labels of the best epoch as .npy under SAVE_DIR/embeddings')
    a('--save_dir', default='./log/will/be/saved/here',
      help='logs and parameters go here; one run per folder (a folder of an earlier run needs --resume or '
           '--overwrite)')
    a('--overwrite', action='store_true',
      help='--save_dir holds an earlier run: move it aside to SAVE_DIR.old-N (never deleted) and start afresh')
    # checkpoints
    a('--checkpoint_epochs', default=10, type=int,
      help='write a resumable checkpoint every this many epochs (and at the end); 0: only at the end')
    a('--keep_checkpoints', default=2, type=int, help='how many of the newest checkpoints to keep')
    a('--resume', nargs='?', const='auto', default=None,
      help='continue from the latest checkpoint in --save_dir (none there: start afresh), or from the '
           'checkpoint folder given; with --start_epoch N, from the checkpoint of epoch N')
    # devices
    a('--ctx', default=None, help='devices: cpu | cpu:0,cpu:1 | gpu:0,gpu:1 (several: data parallel)')
    a('--gpu_idx', default=None, help='the official alias of --ctx: GPU ids, e.g. 0 or 0,1')
    a('--kvstore', default='device',
      help='gradient aggregation: device | local, or dist_sync | dist_async across machines')
    a('--debug', action='store_true', help='show the traceback of input errors')
    for name in ('alpha', 'beta', 'sigma'):
        a('--' + name, default={'alpha': 10.0, 'beta': 1.2, 'sigma': 0.5}[name], type=float,
          help='unused: kept only for compatibility with the official command line')
    return p


def read_config(path):
    """The flags of a config file: one ``--flag=value`` (or ``--flag value``) per line, # comments."""
    import shlex
    try:
        with open(path) as f:
            return shlex.split(f.read(), comments=True)
    except OSError as exc:
        raise UserError('argument --config: cannot read %s: %s' % (path, exc.strerror)) from exc
    except UnicodeDecodeError:
        raise UserError('argument --config: %s is not a text file of flags' % path) from None
    except ValueError as exc:       # shlex: an unclosed quote
        raise UserError('argument --config: cannot parse %s: %s' % (path, exc)) from None


def write_config(args, path):
    """The run's flags as a --config file, so that ``--config SAVE_DIR/args.txt`` repeats the run."""
    import shlex
    skip = {'config', 'resume', 'debug', 'start_epoch', 'overwrite'}
    switches = {a.dest for a in build_parser()._actions if a.nargs == 0}     # store_true flags
    lines = ['# written by main.py; python3 main.py --config %s repeats this run' % path]
    for key, value in sorted(vars(args).items()):
        if key in skip or value is None or (key in switches and not value):
            continue
        if key in switches:
            lines.append('--' + key)
            continue
        if isinstance(value, (list, tuple)):
            value = ','.join(str(v) for v in value)
        lines.append('--%s=%s' % (key, shlex.quote(str(value))))
    with open(path + '.tmp', 'w') as f:
        f.write('\n'.join(lines) + '\n')
    os.replace(path + '.tmp', path)


def parse_args(argv=None):
    from data import DEFAULTS
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    known, _ = parser.parse_known_args(argv)
    if known.config:
        argv = read_config(known.config) + argv     # later flags win: the command line overrides
        known, _ = parser.parse_known_args(argv)
    parser.set_defaults(**DEFAULTS.get(known.data_name.lower(), {}))
    args = parser.parse_args(argv)
    args.loss = args.loss.replace('-', '_')
    args.eval_metrics = [m.strip() for m in args.eval_metrics.split(',') if m.strip()]
    return args


def check_args(args, num_devices):
    """Flag combinations the parser cannot see; each a one-line UserError naming the flags."""
    from loss import LOSSES
    from model import BACKBONES
    from utils.evaluation import METRICS
    if args.loss not in LOSSES:
        raise UserError('unknown loss %r (--loss); choose one of %s' % (args.loss, ', '.join(LOSSES)))
    if args.backbone not in BACKBONES:
        raise UserError('unknown backbone %r (--backbone); choose one of %s' % (args.backbone, ', '.join(BACKBONES)))
    if args.num_instances < 1 or args.batch_size < 1:
        raise UserError('--batch_size and --num_instances must be positive')
    if args.batch_size % args.num_instances:
        raise UserError('--batch_size (%d) must be a multiple of --num_instances (%d)'
                        % (args.batch_size, args.num_instances))
    if args.n_inner_pts < 0:
        raise UserError('--n_inner_pts must be >= 0, got %d' % args.n_inner_pts)
    if args.n_inner_pts > 0 and args.num_instances % 2:
        raise UserError('--num_instances must be even with Embedding Expansion (--n_inner_pts %d): EE pairs '
                        'consecutive images of a class; got %d' % (args.n_inner_pts, args.num_instances))
    if args.batch_size % num_devices:
        raise UserError('--batch_size (%d) must split evenly over the %d devices of --ctx'
                        % (args.batch_size, num_devices))
    if args.loss == 'see_proxy_anchor' and not (1 <= args.n_expansion <= args.embed_dim - 2):
        raise UserError('--n_expansion must be between 1 and --embed_dim - 2, got %d' % args.n_expansion)
    if not 0 <= args.min_thresh <= args.max_thresh <= 1:
        raise UserError('need 0 <= --min_thresh <= --max_thresh <= 1')
    if args.warmup_epochs < 0:
        raise UserError('--warmup_epochs must be >= 0')
    if not 0 <= args.val_class_ratio < 1 or not 0 < args.train_class_ratio < 1:
        raise UserError('--val_class_ratio must be in [0, 1) and --train_class_ratio in (0, 1)')
    if args.checkpoint_epochs < 0 or args.keep_checkpoints < 1:
        raise UserError('--checkpoint_epochs must be >= 0 and --keep_checkpoints >= 1')
    if sorted(args.lr_decay_epochs) != args.lr_decay_epochs or len(set(args.lr_decay_epochs)) != len(
            args.lr_decay_epochs):
        raise UserError('--lr_decay_epochs must be increasing, got %s' % args.lr_decay_epochs)
    unknown = [m for m in args.eval_metrics if m not in METRICS]
    if unknown or not args.eval_metrics:
        raise UserError('--eval_metrics: unknown %s; choose from %s' % (unknown, ', '.join(METRICS)))
    if args.eval_epoch_term < 1 or args.summary_step < 1 or args.epochs < 1:
        raise UserError('--epochs, --eval_epoch_term and --summary_step must be positive')
    if not 0 <= args.start_epoch < args.epochs:
        raise UserError('--start_epoch (%d) must be in [0, --epochs (%d))' % (args.start_epoch, args.epochs))
    for flag, value, low in (('--lr', args.lr, 0.0), ('--embed_dim', args.embed_dim, 0)):
        if not value > low:
            raise UserError('%s must be positive, got %s' % (flag, value))
    if args.image_size < MIN_IMAGE_SIZE:
        raise UserError('--image_size must be at least %d (the trunk downsamples 32x), got %d'
                        % (MIN_IMAGE_SIZE, args.image_size))
    if args.n_inner_pts > MAX_INNER_PTS:
        raise UserError('--n_inner_pts must be at most %d (the mining compares (n+1)^2 / 2 blocks per batch), '
                        'got %d' % (MAX_INNER_PTS, args.n_inner_pts))
    if args.wd < 0 or args.lr_decay_factor <= 0:
        raise UserError('--wd must be >= 0 and --lr_decay_factor > 0')
    keys = [key for m in args.eval_metrics for key in (['R@%d' % k for k in args.recallk] if m == 'recall'
                                                      else [METRIC_KEYS[m]])]
    if args.select_metric and args.select_metric not in keys:
        raise UserError('--select_metric %s is not evaluated; choose one of %s' % (args.select_metric, ', '.join(keys)))


MIN_IMAGE_SIZE = 32
MAX_INNER_PTS = 32


def seed_everything(seed):
    import mxnet as mx
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


def build_loss(args, num_classes):
    """The --loss block with its flags; every EE loss takes n_inner_pts, l2_norm and num_instances,
    the proxy losses the number of training classes."""
    from loss import LOSSES
    proxies = dict(num_classes=num_classes, embed_dim=args.embed_dim, margin=args.pa_margin, alpha=args.pa_alpha)
    if args.loss == 'proxy_anchor':
        return LOSSES[args.loss](**proxies)
    if args.loss == 'see_proxy_anchor':
        return LOSSES[args.loss](n_expansion=args.n_expansion, lambda_=args.see_lambda, max_thresh=args.max_thresh,
                                 min_thresh=args.min_thresh, epochs=args.epochs, **proxies)
    ee = dict(n_inner_pts=args.n_inner_pts, l2_norm=args.ee_l2norm, num_instances=args.num_instances)
    own = {
        'hphn_triplet': dict(margin=args.margin, soft_margin=args.soft_margin, negative_grad=args.ee_negative_grad),
        'triplet': dict(margin=args.margin),
        'lifted': dict(margin=args.lifted_margin),
        'npair': dict(l2_reg=args.npair_l2_reg),
        'ms': dict(alpha=args.ms_alpha, beta=args.ms_beta, base=args.ms_base, epsilon=args.ms_epsilon),
    }
    if args.loss in own:
        return LOSSES[args.loss](**own[args.loss], **ee)
    raise UserError('unknown loss %r (--loss); choose one of %s' % (args.loss, ', '.join(LOSSES)))


def extract_embeddings(net, loader, ctx):
    """Embeddings (n, embed_dim) float32 and labels (n,) of a loader, in its order."""
    import mxnet as mx
    from tqdm import tqdm
    feats, labels = [], []
    for images, y in tqdm(loader, desc='embeddings', leave=False, file=sys.stdout, dynamic_ncols=True):
        parts = mx.gluon.utils.split_and_load(images, ctx, even_split=False)
        feats.extend(net(x).asnumpy() for x in parts)
        labels.append(y.asnumpy())
    return np.concatenate(feats), np.concatenate(labels)


# In-Shop's queries search a separate gallery: clustering metrics do not apply.
QUERY_GALLERY_METRICS = ('recall', 'map_at_r', 'r_precision')


# TensorBoard tag of the share of mined negatives that come from a synthetic point
SYNTHETIC_TAG = 'ee/synthetic_negative_fraction'


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def train_step(net, loss_fn, trainer, images, labels, ctx):
    """One optimisation step; returns (the mean per-anchor loss (float), the batch's embeddings
    (B, embed_dim) on ctx[0], labels (B,) on ctx[0]).

    The batch is split over ``ctx``; the embeddings are gathered on ctx[0] so that the loss (and
    its mining) sees the whole batch as on one device, whatever the number of devices.
    """
    import mxnet as mx
    from mxnet import autograd
    data = mx.gluon.utils.split_and_load(images, ctx)
    with autograd.record():
        parts = [net(x) for x in data]
        embeddings = mx.nd.concat(*[e.as_in_context(ctx[0]) for e in parts], dim=0) if len(parts) > 1 else parts[0]
        labels = labels.as_in_context(ctx[0])
        loss = loss_fn(embeddings, labels)
        # The loss runs on ctx[0]; its parameters' copies elsewhere get a zero gradient, so that
        # the kvstore sums fresh gradients and updates every copy alike.
        for p in loss_fn.collect_params().values():
            for c in ctx[1:]:
                loss = loss + 0 * p.data(c).sum().as_in_context(ctx[0])
    # As the release: back-propagate the per-anchor vector (its sum) and step(1).
    loss.backward()
    trainer.step(1)
    return loss.mean().asscalar(), embeddings, labels


def evaluate_net(net, loaders, ctx, args, split='test'):
    """(metrics, embeddings) of one split: ``split`` 'test' (In-Shop: query against gallery) or 'val'.

    embeddings: {name: (embeddings (n, d), labels (n,))} of the sets evaluated.
    """
    from utils.evaluation import evaluate, evaluate_query_gallery
    on = ctx[0] if ctx[0].device_type == 'gpu' else None
    if split == 'test' and loaders.gallery is not None:
        query = extract_embeddings(net, loaders.query.loader, ctx)
        gallery = extract_embeddings(net, loaders.gallery.loader, ctx)
        metrics = [m for m in args.eval_metrics if m in QUERY_GALLERY_METRICS]
        return (evaluate_query_gallery(*query, *gallery, recallk=args.recallk, metrics=metrics, ctx=on),
                {'query': query, 'gallery': gallery})
    emb, labels = extract_embeddings(net, getattr(loaders, split).loader, ctx)
    return (evaluate(emb, labels, metrics=args.eval_metrics, recallk=args.recallk, ctx=on, seed=args.seed),
            {split: (emb, labels)})


def save_embeddings(embeddings, folder):
    """NAME_embeddings.npy and NAME_labels.npy per set, for ``python3 -m utils.evaluate``."""
    os.makedirs(folder, exist_ok=True)
    for name, (emb, labels) in embeddings.items():
        for suffix, array in (('embeddings', emb), ('labels', labels)):
            path = os.path.join(folder, '%s_%s.npy' % (name, suffix))
            np.save(path + '.tmp.npy', array)
            os.replace(path + '.tmp.npy', path)


def selection_metric(args):
    """The metric key that chooses the best epoch: --select_metric, else R@K of the first K when
    recall is evaluated, else the first of --eval_metrics."""
    if args.select_metric:
        return args.select_metric
    first = args.eval_metrics[0] if 'recall' not in args.eval_metrics else 'recall'
    return METRIC_KEYS[first] if first != 'recall' else 'R@%d' % args.recallk[0]


# the key each --eval_metrics entry reports (recall: R@K per K)
METRIC_KEYS = {'map_at_r': 'MAP@R', 'r_precision': 'RP', 'nmi': 'NMI', 'f1': 'F1'}


def train(args):
    import mxnet as mx

    from data import EvalSet, build_split_loaders
    from model import get_model
    from utils.checkpoint import Checkpointer, save_parameters_atomic, set_random_state
    from utils.devices import create_kvstore, parse_contexts
    from utils.interrupt import StopFlag
    from utils.resume import compare_flags, flag_values, resume_path
    from utils.run_dir import RunDir

    ctx = parse_contexts(args.ctx, args.gpu_idx)
    check_args(args, len(ctx))
    kvstore, rank, workers = create_kvstore(args.kvstore)
    chief = rank == 0
    run_dir = RunDir(args.save_dir, resume=bool(args.resume), overwrite=args.overwrite) if chief else None
    stop = StopFlag()
    try:
        checkpoints = Checkpointer(args.save_dir, args.keep_checkpoints)
        resume_from = saved = None
        if args.resume:
            resume_from = resume_path(args.resume, args.start_epoch, checkpoints, warn)
            if resume_from:
                saved = Checkpointer.read_state(resume_from)
                for line in compare_flags(saved.get('args', {}), flag_values(args), resume_from):
                    print(line)
        if chief:
            write_config(args, os.path.join(args.save_dir, 'args.txt'))
        seed_everything(args.seed)          # the same initial model on every worker
        stop.before_workers()
        loaders = build_split_loaders(
            args.data_name, args.data_dir, args.image_size, args.batch_size, args.num_instances, args.num_workers,
            val_class_ratio=args.val_class_ratio, check_images=args.check_images,
            skip_bad_images=args.skip_bad_images, cache_images=args.cache_images,
            train_class_ratio=args.train_class_ratio, part=(rank, workers))
        stop.arm()
        print('data %s: %s' % (args.data_name, ', '.join(
            '%s %d images of %d classes' % (name, len(labels), len(np.unique(labels))) for name, labels in
            [('train', loaders.train_labels)] + [(name, split.labels) for name, split in loaders._asdict().items()
                                                 if isinstance(split, EvalSet)])))
        net = get_model(args.backbone, args.embed_dim, args.pretrained, args.pretrained_path, ctx,
                        pooling=args.pooling, bn_freeze=args.bn_freeze)
        net.backbone.collect_params().setattr('lr_mult', args.base_lr_mult)
        loss_fn = build_loss(args, int(loaders.train_labels.max()) + 1)
        loss_fn.initialize(ctx=ctx)
        loss_fn.collect_params().setattr('lr_mult', args.proxy_lr_mult)
        loss_fn.hybridize(static_alloc=True, static_shape=True)
        trainer = build_trainer(args, net, loss_fn, kvstore)
        # Each worker draws its own batches; a resumed run continues the saved random states instead.
        np.random.seed(args.seed + 1000 * rank)
        random.seed(args.seed + 1000 * rank)
        progress = {'epoch': args.start_epoch, 'iteration': 0, 'best': {}, 'best_chosen': None}
        if resume_from:
            state = Checkpointer.load(resume_from, net, trainer, loss_fn, ctx)
            progress.update((k, state[k]) for k in progress if k in state)
            if state.get('iteration'):      # stopped mid-epoch: redraw that epoch from its start
                set_random_state(state['epoch_random'])
            print('resumed from %s: epoch %d%s, best %s' % (
                resume_from, progress['epoch'],
                ' + %d iterations' % progress['iteration'] if progress['iteration'] else '', fmt(progress['best'])))
        elif args.resume:
            print('no checkpoint in %s: starting afresh' % checkpoints.root)
        best = train_loop(args, net, loss_fn, trainer, loaders, ctx, checkpoints, progress, stop, chief)
        if workers > 1:     # every worker's copy, to check that they agree
            save_parameters_atomic(net, os.path.join(args.save_dir, 'model_final.rank%d.params' % rank))
        if chief:
            save_parameters_atomic(net, os.path.join(args.save_dir, 'model_final.params'))
            print('best (chosen on %s%s): %s' % ('val ' if loaders.val else '', selection_metric(args), fmt(best)))
            print('logs: tensorboard --logdir %s' % args.save_dir)
        return best
    finally:
        stop.restore()
        if run_dir:
            run_dir.close()


def warn(line):
    print('warning: ' + line, file=sys.stderr)


def build_trainer(args, net, loss_fn, kvstore):
    """The gluon Trainer of the network's and the loss's parameters with the --optim flags."""
    import mxnet as mx
    opts = {'learning_rate': args.lr, 'wd': args.wd}
    if args.optim == 'sgd':
        opts['momentum'] = args.momentum
    if args.optim == 'adamw':
        import utils.adamw  # noqa: F401  registers the optimiser
    params = net.collect_params()
    params.update(loss_fn.collect_params())
    # The optimiser's states stay in this process (not in a kvstore), so that checkpoints hold them;
    # asynchronous training must update on the servers.
    return mx.gluon.Trainer(params, args.optim, opts, kvstore=kvstore,
                            update_on_kvstore='async' in args.kvstore)


def train_loop(args, net, loss_fn, trainer, loaders, ctx, checkpoints, progress, stop, chief):
    """Epochs progress['epoch'] .. --epochs (the first skipping progress['iteration'] batches, drawn
    again from that epoch's random state, when resuming mid-epoch). Returns the best test metrics."""
    import mxnet as mx
    from tqdm import tqdm

    from loss.pair_loss import PairLoss
    from utils.checkpoint import random_state, save_parameters_atomic
    from utils.interrupt import Stopped
    from utils.resume import flag_values
    from utils.summary import Summary

    train_loader = loaders.train
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise UserError('an epoch holds no full batch of --batch_size %d' % args.batch_size)
    schedule = mx.lr_scheduler.MultiFactorScheduler(
        step=[e * steps_per_epoch for e in args.lr_decay_epochs], factor=args.lr_decay_factor, base_lr=args.lr)
    select = selection_metric(args)
    if 'recall' not in args.eval_metrics and not args.select_metric:
        print('choosing the best epoch on %s, the first of --eval_metrics (--select_metric to change)' % select)
    summary = Summary(args.save_dir) if chief else None
    start_epoch, skip = progress['epoch'], progress['iteration']
    best, best_chosen = progress['best'], progress['best_chosen']
    loss_value, synthetic, global_step = float('nan'), None, start_epoch * steps_per_epoch + skip
    # what EE does: how often the mined negative comes from a synthetic point (README, Logs)
    measure_synthetic = isinstance(loss_fn, PairLoss) and loss_fn.expansion.n_inner_pts > 0
    epochs = tqdm(range(start_epoch, args.epochs), desc='epochs', file=sys.stdout, dynamic_ncols=True,
                  initial=start_epoch, total=args.epochs, disable=not chief)
    trunk_grad_req = {p.name: p.grad_req for p in net.backbone.collect_params().values()}

    def save(epoch, iteration=0, epoch_random=None):
        state = {'best': best, 'best_chosen': best_chosen, 'global_step': global_step,
                 'args': flag_values(args), 'epoch_random': epoch_random}
        return checkpoints.save(epoch, net, trainer, loss_fn, state, iteration) if chief else None

    try:
        for epoch in epochs:
            if hasattr(loss_fn, 'set_epoch'):
                loss_fn.set_epoch(epoch)
            if args.warmup_epochs and epoch <= args.warmup_epochs:     # warm-up: the trunk frozen, then thawed
                for p in net.backbone.collect_params().values():
                    p.grad_req = 'null' if epoch < args.warmup_epochs else trunk_grad_req[p.name]
            epoch_random = random_state()       # a mid-epoch checkpoint redraws the epoch from here
            for i, (images, labels) in enumerate(train_loader):
                if skip:                        # resumed mid-epoch: these batches were trained
                    skip -= 1
                    continue
                trainer.set_learning_rate(schedule(epoch * steps_per_epoch + i))
                loss_value, embeddings, labels = train_step(net, loss_fn, trainer, images, labels, ctx)
                global_step = epoch * steps_per_epoch + i + 1
                if not np.isfinite(loss_value):
                    last = checkpoints.latest()
                    raise TrainingDiverged('loss is %s at epoch %d, iteration %d (global step %d); %s'
                                           % (loss_value, epoch + 1, i + 1, global_step,
                                              'the last good checkpoint is %s (--resume)' % last if last
                                              else 'no checkpoint was written yet'))
                if chief and i % args.summary_step == 0:
                    summary.scalar('lr', trainer.learning_rate, global_step)
                    summary.scalar('loss', loss_value, global_step)
                    if measure_synthetic:
                        synthetic = loss_fn.synthetic_negative_fraction(embeddings, labels)
                        summary.scalar(SYNTHETIC_TAG, synthetic, global_step)
                if stop.signum:
                    path = save(epoch, i + 1, epoch_random)
                    raise Stopped('stopped by %s at epoch %d, iteration %d: checkpoint %s (continue with --resume)'
                                  % (stop.name, epoch + 1, i + 1, path), stop.signum)
            if chief:
                summary.scalar('lr_epoch', trainer.learning_rate, epoch + 1)
                summary.scalar('loss_epoch', loss_value, epoch + 1)
                postfix = dict(loss='%.4f' % loss_value, lr='%.1e' % trainer.learning_rate)
                if synthetic is not None:
                    postfix['synthetic'] = '%.2f' % synthetic
                epochs.set_postfix(**postfix)
                last = epoch + 1 == args.epochs
                if (epoch + 1) % args.eval_epoch_term == 0 or last:
                    metrics, chosen, line, embeddings = evaluate_epoch(net, loaders, ctx, args, summary,
                                                                       global_step, epoch + 1)
                    if chosen.get(select, -1.0) > (-1.0 if best_chosen is None else best_chosen):
                        best_chosen, best = chosen[select], dict(metrics)
                        summary.metrics({select: best[select]} if select in best else {}, global_step, epoch + 1,
                                        suffix='/best')
                        save_parameters_atomic(net, os.path.join(args.save_dir,
                                                                 'model_epoch_%05d.params' % (epoch + 1)))
                        if args.save_embeddings:
                            save_embeddings(embeddings, os.path.join(args.save_dir, 'embeddings'))
                        line += '  (best)'
                    tqdm.write('[epoch %d] %s' % (epoch + 1, line), file=sys.stdout)
            if epoch + 1 == args.epochs or (args.checkpoint_epochs and (epoch + 1) % args.checkpoint_epochs == 0) \
                    or stop.signum:
                path = save(epoch + 1)
            if stop.signum:
                raise Stopped('stopped by %s after epoch %d: checkpoint %s (continue with --resume)'
                              % (stop.name, epoch + 1, path), stop.signum)
    finally:
        if summary:
            summary.close()
    return best


def evaluate_epoch(net, loaders, ctx, args, summary, global_step, epoch):
    """Test metrics, the metrics that choose the epoch (validation classes when held out, else the
    test set, as the release does), the log line and the test embeddings; all logged."""
    metrics, embeddings = evaluate_net(net, loaders, ctx, args)
    summary.metrics(metrics, global_step, epoch)
    line = fmt(metrics)
    chosen = metrics
    if loaders.val:     # choose the epoch on held-out training classes, not on the test set
        chosen = evaluate_net(net, loaders, ctx, args, split='val')[0]
        summary.metrics(chosen, global_step, epoch, prefix='val_')
        line = 'val %s | test %s' % (fmt(chosen), line)
    return metrics, chosen, line, embeddings


def fmt(metrics):
    return '  '.join('%s %.4f' % kv for kv in metrics.items())


def main(argv=None):
    from utils.interrupt import Stopped
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        train(parse_args(argv))
    except Stopped as exc:
        print(str(exc), file=sys.stderr)
        return exc.status
    except UserError as exc:
        if '--debug' in argv:
            raise
        print('error: %s' % exc, file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    # gluoncv's deep models exceed Python's default recursion limit when hybridising
    sys.setrecursionlimit(2000)
    sys.exit(main())
