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


def build_parser():
    p = argparse.ArgumentParser(description='Embedding Expansion (CVPR 2020) in MXNet Gluon',
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
    a('--image_size', default=227, type=int, help='width and height of input images')
    a('--batch_size', default=128, type=int, help='images per training batch')
    a('--num_instances', default=32, type=int, help='images per class in a batch (even with EE)')
    a('--num_workers', default=10, type=int, help='DataLoader worker processes (0: in the main process)')
    # model
    a('--backbone', default='googlenet', help='backbone trunk from the model registry')
    a('--embed_dim', default=512, type=int, help='embedding size')
    a('--pretrained', default=True, type=str2bool, help='start from ImageNet weights (false: random init)')
    a('--pretrained_path', default=None, help='ImageNet weight file to use instead of gluoncv\'s store')
    a('--init_from', default=None, metavar='PATH',
      help='start the embedding network (trunk and embedding layer) from an earlier run: a .params file '
           'main.py wrote, or a --save_dir (its model_final.params); replaces --pretrained. The optimiser, '
           'epoch counter, schedule and any proxies start fresh')
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
    a('--summary_step', default=10, type=int, help='log loss and lr every this many iterations')
    a('--save_embeddings', action='store_true',
      help='write the test embeddings and labels of the best epoch as .npy under SAVE_DIR/embeddings')
    a('--save_dir', default='./log/will/be/saved/here', help='logs and parameters go here')
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


def write_config(args, path):
    """The run's flags as a --config file, so that ``--config SAVE_DIR/args.txt`` repeats the run."""
    import shlex
    skip = {'config', 'resume', 'debug', 'start_epoch'}
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
        try:
            argv = read_config(known.config) + argv     # later flags win: the command line overrides
        except UserError as exc:
            parser.error(str(exc))
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


def seed_everything(seed):
    import mxnet as mx
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


def prepare_save_dir(path):
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, '.write-test-%d' % os.getpid())
        open(probe, 'w').close()
        os.remove(probe)
    except OSError as exc:
        raise UserError('cannot write to --save_dir %s: %s' % (path, exc.strerror or exc))


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


def train(args):
    import mxnet as mx
    from tqdm import tqdm

    from data import EvalSet, build_split_loaders
    from loss.pair_loss import PairLoss
    from model import get_model
    from utils.checkpoint import Checkpointer, init_file, init_from, save_parameters_atomic
    from utils.devices import create_kvstore, parse_contexts
    from utils.summary import Summary

    ctx = parse_contexts(args.ctx, args.gpu_idx)
    check_args(args, len(ctx))
    if args.init_from:      # a missing file stops the run before the data are read
        init_file(args.init_from)
    kvstore, rank, workers = create_kvstore(args.kvstore)
    chief = rank == 0
    if chief:
        prepare_save_dir(args.save_dir)
        write_config(args, os.path.join(args.save_dir, 'args.txt'))
    seed_everything(args.seed)          # the same initial model on every worker
    loaders = build_split_loaders(
        args.data_name, args.data_dir, args.image_size, args.batch_size, args.num_instances, args.num_workers,
        val_class_ratio=args.val_class_ratio, check_images=args.check_images, skip_bad_images=args.skip_bad_images,
        train_class_ratio=args.train_class_ratio, part=(rank, workers))
    train_loader = loaders.train
    print('data %s: %s' % (args.data_name, ', '.join(
        '%s %d images of %d classes' % (name, len(labels), len(np.unique(labels))) for name, labels in
        [('train', loaders.train_labels)] + [(name, split.labels) for name, split in loaders._asdict().items()
                                             if isinstance(split, EvalSet)])))
    net = get_model(args.backbone, args.embed_dim, args.pretrained, args.pretrained_path, ctx,
                    pooling=args.pooling, bn_freeze=args.bn_freeze)
    if args.init_from:      # before --resume: a resumed run continues from its own checkpoint
        print('initialised from %s' % init_from(net, args.init_from, ctx, '--backbone %s --embed_dim %d'
                                                % (args.backbone, args.embed_dim)))
    net.backbone.collect_params().setattr('lr_mult', args.base_lr_mult)
    loss_fn = build_loss(args, int(loaders.train_labels.max()) + 1)
    loss_fn.initialize(ctx=ctx)
    loss_fn.collect_params().setattr('lr_mult', args.proxy_lr_mult)
    loss_fn.hybridize(static_alloc=True, static_shape=True)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise UserError('an epoch holds no full batch of --batch_size %d' % args.batch_size)

    schedule = mx.lr_scheduler.MultiFactorScheduler(
        step=[e * steps_per_epoch for e in args.lr_decay_epochs], factor=args.lr_decay_factor, base_lr=args.lr)
    opts = {'learning_rate': args.lr, 'wd': args.wd}
    if args.optim == 'sgd':
        opts['momentum'] = args.momentum
    if args.optim == 'adamw':
        import utils.adamw  # noqa: F401  registers the optimiser
    params = net.collect_params()
    params.update(loss_fn.collect_params())
    # Optimiser states stay on the workers (not the servers) so that checkpoints can hold them.
    trainer = mx.gluon.Trainer(params, args.optim, opts, kvstore=kvstore,
                               update_on_kvstore=False if workers > 1 else None)

    # Each worker draws its own batches; a resumed run continues the saved random states instead.
    np.random.seed(args.seed + 1000 * rank)
    random.seed(args.seed + 1000 * rank)
    checkpoints = Checkpointer(args.save_dir, args.keep_checkpoints)
    recall1 = 'R@%d' % args.recallk[0]
    best, best_chosen, start_epoch = {}, -1.0, args.start_epoch
    if args.resume:
        path = resume_path(args, checkpoints)
        if path:
            state = checkpoints.load(path, net, trainer, loss_fn, ctx)
            start_epoch, best, best_chosen = state['epoch'], state['best'], state['best_chosen']
            print('resumed from %s: epoch %d, best %s' % (path, start_epoch, fmt(best)))
        else:
            print('no checkpoint in %s: starting afresh' % checkpoints.root)
    summary = Summary(args.save_dir) if chief else None

    loss_value, synthetic = float('nan'), None
    # what EE does: how often the mined negative comes from a synthetic point (README, Logs)
    measure_synthetic = isinstance(loss_fn, PairLoss) and loss_fn.expansion.n_inner_pts > 0
    epochs = tqdm(range(start_epoch, args.epochs), desc='epochs', file=sys.stdout, dynamic_ncols=True,
                  initial=start_epoch, total=args.epochs, disable=not chief)
    trunk_grad_req = {p.name: p.grad_req for p in net.backbone.collect_params().values()}
    for epoch in epochs:
        if hasattr(loss_fn, 'set_epoch'):
            loss_fn.set_epoch(epoch)
        if args.warmup_epochs and epoch <= args.warmup_epochs:     # warm-up: the trunk frozen, then thawed
            for p in net.backbone.collect_params().values():
                p.grad_req = 'null' if epoch < args.warmup_epochs else trunk_grad_req[p.name]
        for i, (images, labels) in enumerate(train_loader):
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
        if not chief:
            continue
        summary.scalar('lr_epoch', trainer.learning_rate, epoch + 1)
        summary.scalar('loss_epoch', loss_value, epoch + 1)
        postfix = dict(loss='%.4f' % loss_value, lr='%.1e' % trainer.learning_rate)
        if synthetic is not None:
            postfix['synthetic'] = '%.2f' % synthetic
        epochs.set_postfix(**postfix)
        last = epoch + 1 == args.epochs
        if (epoch + 1) % args.eval_epoch_term == 0 or last:
            metrics, embeddings = evaluate_net(net, loaders, ctx, args)
            summary.metrics(metrics, global_step, epoch + 1)
            line = fmt(metrics)
            if loaders.val:     # choose the epoch on held-out training classes, not on the test set
                chosen = evaluate_net(net, loaders, ctx, args, split='val')[0]
                summary.metrics(chosen, global_step, epoch + 1, prefix='val_')
                line = 'val %s | test %s' % (fmt(chosen), line)
            else:
                chosen = metrics
            if chosen.get(recall1, -1) > best_chosen:
                best_chosen, best = chosen[recall1], dict(metrics)
                summary.metrics({recall1: best[recall1]}, global_step, epoch + 1, suffix='/best')
                save_parameters_atomic(net, os.path.join(args.save_dir, 'model_epoch_%05d.params' % (epoch + 1)))
                if args.save_embeddings:
                    save_embeddings(embeddings, os.path.join(args.save_dir, 'embeddings'))
                line += '  (best)'
            tqdm.write('[epoch %d] %s' % (epoch + 1, line), file=sys.stdout)
        if last or (args.checkpoint_epochs and (epoch + 1) % args.checkpoint_epochs == 0):
            checkpoints.save(epoch + 1, net, trainer, loss_fn, {'best': best, 'best_chosen': best_chosen,
                                                                     'global_step': global_step})
    if workers > 1:     # every worker's copy, to check that they agree
        save_parameters_atomic(net, os.path.join(args.save_dir, 'model_final.rank%d.params' % rank))
    if chief:
        save_parameters_atomic(net, os.path.join(args.save_dir, 'model_final.params'))
        summary.close()
        print('best: ' + fmt(best))
        print('logs: tensorboard --logdir %s' % args.save_dir)
    return best


def fmt(metrics):
    return '  '.join('%s %.4f' % kv for kv in metrics.items())


def resume_path(args, checkpoints):
    """The checkpoint folder --resume asks for, or None when 'auto' finds none."""
    if args.resume != 'auto':
        if not os.path.isfile(os.path.join(args.resume, 'state.pkl')):
            raise UserError('--resume %s is not a checkpoint folder (expected %s/state.pkl)'
                            % (args.resume, args.resume))
        return args.resume
    if args.start_epoch:
        path = os.path.join(checkpoints.root, 'epoch_%05d' % args.start_epoch)
        if path not in checkpoints.paths():
            raise UserError('--resume --start_epoch %d: no checkpoint %s; there are: %s'
                            % (args.start_epoch, path, ', '.join(checkpoints.paths()) or 'none'))
        return path
    return checkpoints.latest()


def main(argv=None):
    args = parse_args(argv)
    try:
        train(args)
    except UserError as exc:
        if args.debug:
            raise
        print('error: %s' % exc, file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    # gluoncv's deep models exceed Python's default recursion limit when hybridising
    sys.setrecursionlimit(2000)
    sys.exit(main())
