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
import time

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
    # data
    a('--data_name', default='digits', help='digits (offline, bundled) | cars196 (official: car196)')
    a('--data_dir', default='./datasets/CARS196', help='root of the data set release files')
    a('--image_size', default=227, type=int, help='width and height of input images')
    a('--batch_size', default=128, type=int, help='images per training batch')
    a('--num_instances', default=32, type=int, help='images per class in a batch (even with EE)')
    a('--num_workers', default=10, type=int, help='DataLoader worker processes (0: in the main process)')
    # model
    a('--backbone', default='googlenet', help='backbone trunk from the model registry')
    a('--embed_dim', default=512, type=int, help='embedding size')
    a('--pretrained', default=True, type=str2bool, help='start from ImageNet weights (false: random init)')
    a('--pretrained_path', default=None, help='ImageNet weight file to use instead of gluoncv\'s store')
    # loss
    a('--loss', default='hphn_triplet', help='hphn_triplet (official spelling hphn-triplet accepted)')
    a('--n_inner_pts', default=2, type=int, help='synthetic points per pair (Embedding Expansion); 0: no EE')
    a('--ee_l2norm', default=True, type=str2bool, help='L2-normalise the synthetic points')
    a('--margin', default=1e-5, type=float, help='triplet margin')
    a('--soft_margin', default=False, type=str2bool,
      help='log(1 + exp(d_ap - d_an)) instead of the hinge (the official main.py ignored this flag)')
    # optimisation
    a('--optim', default='adam', choices=('adam', 'sgd'), help='optimiser (sgd uses --momentum)')
    a('--lr', default=1e-4, type=float, help='base learning rate')
    a('--wd', default=5e-4, type=float, help='weight decay')
    a('--momentum', default=0.9, type=float, help='momentum, with --optim sgd')
    a('--base_lr_mult', default=1.0, type=float, help='learning-rate multiplier of the backbone trunk')
    a('--lr_decay_factor', default=0.5, type=float, help='learning-rate factor at each decay epoch')
    a('--lr_decay_epochs', default='10,20,40,80', type=int_list, help='epochs at which the lr decays')
    a('--epochs', default=5000, type=int,
      help='training epochs; an epoch is (training classes x num_instances) images, as in the release')
    a('--start_epoch', default=0, type=int,
      help='first epoch number; as in the release it only shifts the epoch counter and lr schedule')
    a('--seed', default=0, type=int, help='random seed (numpy, random, mxnet)')
    # evaluation and logging
    a('--eval_epoch_term', default=50, type=int, help='evaluate every this many epochs')
    a('--recallk', default='1,2,4,8', type=int_list, help='K values of Recall@K')
    a('--eval_metrics', default='recall,nmi',
      help='comma-separated subset of recall, map_at_r, r_precision, nmi, f1')
    a('--summary_step', default=10, type=int, help='log loss and lr every this many iterations')
    a('--save_dir', default='./log/will/be/saved/here', help='logs and parameters go here')
    # devices
    a('--gpu_idx', default=None, help='GPU ids, e.g. 0 or 0,1 (several: data parallel); unset: CPU')
    a('--kvstore', default='device', help='gradient aggregation across devices: device | local')
    a('--debug', action='store_true', help='show the traceback of input errors')
    for name in ('alpha', 'beta', 'sigma'):
        a('--' + name, default={'alpha': 10.0, 'beta': 1.2, 'sigma': 0.5}[name], type=float,
          help='unused: kept only for compatibility with the official command line')
    return p


def parse_args(argv=None):
    from data import DEFAULTS
    parser = build_parser()
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
    if (args.batch_size // num_devices) % args.num_instances or args.batch_size % num_devices:
        raise UserError('--batch_size (%d) must split over %d devices into multiples of --num_instances (%d)'
                        % (args.batch_size, num_devices, args.num_instances))
    if sorted(args.lr_decay_epochs) != args.lr_decay_epochs or len(set(args.lr_decay_epochs)) != len(
            args.lr_decay_epochs):
        raise UserError('--lr_decay_epochs must be increasing, got %s' % args.lr_decay_epochs)
    unknown = [m for m in args.eval_metrics if m not in METRICS]
    if unknown or not args.eval_metrics:
        raise UserError('--eval_metrics: unknown %s; choose from %s' % (unknown, ', '.join(METRICS)))
    if args.eval_epoch_term < 1 or args.summary_step < 1 or args.epochs < 1:
        raise UserError('--epochs, --eval_epoch_term and --summary_step must be positive')


def contexts(gpu_idx):
    import mxnet as mx
    if gpu_idx is None or str(gpu_idx).strip().lower() in ('', 'none'):
        return [mx.cpu()]
    try:
        ids = [int(i) for i in str(gpu_idx).split(',')]
    except ValueError:
        raise UserError('--gpu_idx expects GPU ids like 0 or 0,1, got %r' % gpu_idx)
    available = mx.context.num_gpus()
    missing = [i for i in ids if i >= available]
    if missing:
        raise UserError('--gpu_idx %s: MXNet sees %d GPU(s); a GPU run needs requirements-gpu.txt '
                        '(mxnet-cu112) and CUDA 11.2' % (gpu_idx, available))
    return [mx.gpu(i) for i in ids]


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


def build_loss(args):
    """The --loss block with its flags; every EE loss takes n_inner_pts, l2_norm and num_instances."""
    from loss import LOSSES
    ee = dict(n_inner_pts=args.n_inner_pts, l2_norm=args.ee_l2norm, num_instances=args.num_instances)
    if args.loss == 'hphn_triplet':
        return LOSSES['hphn_triplet'](margin=args.margin, soft_margin=args.soft_margin, **ee)
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


def train(args):
    import mxnet as mx
    from mxnet import autograd
    from tqdm import tqdm

    from data import build_loaders
    from model import get_model
    from utils.checkpoint import save_parameters_atomic
    from utils.evaluation import evaluate
    from utils.summary import Summary

    ctx = contexts(args.gpu_idx)
    check_args(args, len(ctx))
    prepare_save_dir(args.save_dir)
    seed_everything(args.seed)
    train_loader, test_loader, train_labels, test_labels = build_loaders(
        args.data_name, args.data_dir, args.image_size, args.batch_size, args.num_instances, args.num_workers)
    print('data %s: %d training images of %d classes, %d test images of %d classes'
          % (args.data_name, len(train_labels), len(np.unique(train_labels)), len(test_labels),
             len(np.unique(test_labels))))
    net = get_model(args.backbone, args.embed_dim, args.pretrained, args.pretrained_path, ctx)
    net.backbone.collect_params().setattr('lr_mult', args.base_lr_mult)
    loss_fn = build_loss(args)
    loss_fn.hybridize(static_alloc=True, static_shape=True)

    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise UserError('an epoch of %d images holds no full batch of --batch_size %d'
                        % (len(train_loader._batch_sampler._sampler), args.batch_size))
    schedule = mx.lr_scheduler.MultiFactorScheduler(
        step=[e * steps_per_epoch for e in args.lr_decay_epochs], factor=args.lr_decay_factor, base_lr=args.lr)
    opts = {'learning_rate': args.lr, 'wd': args.wd}
    if args.optim == 'sgd':
        opts['momentum'] = args.momentum
    trainer = mx.gluon.Trainer(net.collect_params(), args.optim, opts, kvstore=args.kvstore)
    summary = Summary(args.save_dir)
    recall1 = 'R@%d' % args.recallk[0]
    best = {recall1: -1.0}

    epochs = tqdm(range(args.start_epoch, args.epochs), desc='epochs', file=sys.stdout, dynamic_ncols=True,
                  initial=args.start_epoch, total=args.epochs)
    for epoch in epochs:
        for i, (images, labels) in enumerate(train_loader):
            trainer.set_learning_rate(schedule(epoch * steps_per_epoch + i))
            data = mx.gluon.utils.split_and_load(images, ctx)
            targets = mx.gluon.utils.split_and_load(labels, ctx)
            with autograd.record():
                losses = [loss_fn(net(x), y) for x, y in zip(data, targets)]
            # As the release: back-propagate the per-anchor vectors (their sum) and step(1).
            autograd.backward(losses)
            trainer.step(1)
            loss_value = sum(l.mean().asscalar() for l in losses) / len(losses)
            global_step = epoch * steps_per_epoch + i + 1
            if i % args.summary_step == 0:
                summary.scalar('lr', trainer.learning_rate, global_step)
                summary.scalar('loss', loss_value, global_step)
        summary.scalar('lr_epoch', trainer.learning_rate, epoch + 1)
        summary.scalar('loss_epoch', loss_value, epoch + 1)
        epochs.set_postfix(loss='%.4f' % loss_value, lr='%.1e' % trainer.learning_rate)

        if (epoch + 1) % args.eval_epoch_term == 0 or epoch + 1 == args.epochs:
            emb, y = extract_embeddings(net, test_loader, ctx)
            metrics = evaluate(emb, y, metrics=args.eval_metrics, recallk=args.recallk, seed=args.seed)
            summary.metrics(metrics, global_step, epoch + 1)
            line = '  '.join('%s %.4f' % kv for kv in metrics.items())
            if metrics.get(recall1, -1) > best[recall1]:
                best = dict(metrics)
                summary.metrics({recall1: best[recall1]}, global_step, epoch + 1, suffix='/best')
                save_parameters_atomic(net, os.path.join(args.save_dir, 'model_epoch_%05d.params' % (epoch + 1)))
                line += '  (best)'
            tqdm.write('[epoch %d] %s' % (epoch + 1, line), file=sys.stdout)
    save_parameters_atomic(net, os.path.join(args.save_dir, 'model_final.params'))
    summary.close()
    print('best: ' + '  '.join('%s %.4f' % kv for kv in best.items()))
    print('logs: tensorboard --logdir %s' % args.save_dir)
    return best


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
