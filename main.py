"""Train and evaluate deep metric learning with Embedding Expansion (Ko & Gu, CVPR 2020).

    python3 main.py                       # offline quick run: EE + HPHN triplet on scikit-learn's digits
    python3 main.py --gpu_idx=0 --data_name=cars196 --data_dir=datasets/CARS196 ...   # the paper's setting

This file is the experiment's recipe, top to bottom: devices, the run's folder, the data, the
embedding network, the loss (EE inside), the optimiser, resuming, the training loop, the final
parameters. The flags are in runner/options.py (defaults of the official release,
docs/official_setup.md), the loop in runner/trainer.py, the evaluation in runner/evaluator.py.
"""
import os
import random
import sys

import numpy as np

import utils.mxnet_compat  # noqa: F401  (first: MXNet 1.9.1's numpy names on Python 3.12+, the CUDA wheels' libraries)
from loss import build_loss
from runner.options import build_parser, check_args, flag_errors, parse_args, selection_metric, write_config  # noqa: F401
from runner.trainer import build_trainer, fmt, train_step  # noqa: F401  (main.train_step: the API tests use)
from utils.errors import run_command, warn


def seed_everything(seed):
    import mxnet as mx
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


def describe(name, loaders):
    """'data NAME: train N images of C classes, test ...' of the loaded splits."""
    from data import EvalSet
    splits = [('train', loaders.train_labels)] + [(split_name, split.labels) for split_name, split in
                                                  loaders._asdict().items() if isinstance(split, EvalSet)]
    return 'data %s: %s' % (name, ', '.join('%s %d images of %d classes' % (split_name, len(labels),
                                                                           len(np.unique(labels)))
                                            for split_name, labels in splits))


def train(args):
    """One run of main.py's flags ``args``; returns the best test metrics (a dict)."""
    from runner.interrupt import StopFlag
    stop = StopFlag()       # from here a signal stops the run with one line, whatever it is doing
    stop.prepare()
    run_dir = None
    try:
        from data import build_split_loaders  # the heavy imports (mxnet, gluoncv) after parsing the flags
        from data.image_file import set_max_pixels
        from model import get_model
        from runner.checkpoint import Checkpointer, init_file, init_from, save_parameters_atomic
        from runner.devices import create_kvstore, parse_contexts
        from runner.evaluator import check_expansion_sizes
        from runner.resume import resume_from_checkpoint
        from runner.run_dir import RunDir
        from runner.trainer import TrainingLoop

        ctx = parse_contexts(args.ctx, args.gpu_idx)
        check_args(args, len(ctx))
        set_max_pixels(args.max_image_pixels)
        if args.init_from:      # a missing file stops the run before the data are read
            init_file(args.init_from)
        kvstore, rank, workers = create_kvstore(args.kvstore, args.dist_timeout)
        chief = rank == 0
        # the run's folder: locked while the run lives, never mixed with an earlier run
        run_dir = RunDir(args.save_dir, resume=args.resume, overwrite=args.overwrite) if chief else None
        checkpoints = Checkpointer(args.save_dir, args.keep_checkpoints)
        resume = resume_from_checkpoint(args, checkpoints, warn)        # checks the flags it recorded
        if chief:
            write_config(args, os.path.join(args.save_dir, 'args.txt'))
        seed_everything(args.seed)          # the same initial model on every worker
        # the data: the official class-balanced sampler and transforms
        with flag_errors():
            loaders = build_split_loaders(
                args.data_name, args.data_dir, args.image_size, args.batch_size, args.num_instances,
                args.num_workers, val_class_ratio=args.val_class_ratio, check_images=args.check_images,
                skip_bad_images=args.skip_bad_images, cache_images=args.cache_images,
                train_class_ratio=args.train_class_ratio, part=(rank, workers))
        print(describe(args.data_name, loaders))
        with flag_errors():
            check_expansion_sizes(loaders, args)
        with flag_errors():     # the network: trunk, pooling, Dense(embed_dim), L2 norm; the loss, EE inside
            net = get_model(args.backbone, args.embed_dim, args.pretrained and not args.init_from,
                            args.pretrained_path, ctx, pooling=args.pooling, bn_freeze=args.bn_freeze)
            loss_fn = build_loss(args, int(loaders.train_labels.max()) + 1)
        if args.init_from:      # a resumed run then continues from its own checkpoint
            print('initialised from %s' % init_from(net, args.init_from, ctx, '--backbone %s --embed_dim %d'
                                                    % (args.backbone, args.embed_dim)))
        net.backbone.collect_params().setattr('lr_mult', args.base_lr_mult)
        loss_fn.initialize(ctx=ctx)
        loss_fn.collect_params().setattr('lr_mult', args.proxy_lr_mult)
        loss_fn.hybridize(static_alloc=True, static_shape=True)
        trainer = build_trainer(args, net, loss_fn, kvstore)
        # each worker draws its own batches; a resumed run continues the saved random states instead
        np.random.seed(args.seed + 1000 * rank)
        random.seed(args.seed + 1000 * rank)
        progress = resume.restore(net, trainer, loss_fn, ctx)
        stop.arm()      # training: a signal now ends the current iteration and writes a checkpoint
        best = TrainingLoop(args, net, loss_fn, trainer, loaders, ctx, checkpoints, progress, stop, chief).run()
        if workers > 1:     # every worker's copy, to check that they agree
            save_parameters_atomic(net, os.path.join(args.save_dir, 'model_final.rank%d.params' % rank))
        if chief:
            save_parameters_atomic(net, os.path.join(args.save_dir, 'model_final.params'))
            print('best: %s (chosen on %s%s)' % (fmt(best) if best else 'none (no evaluation improved on it)',
                                                 'val ' if loaders.val else '', selection_metric(args)))
            print('logs: tensorboard --logdir %s' % args.save_dir)
        return best
    finally:
        stop.restore()
        if run_dir:
            run_dir.close()


def main(argv=None):
    """``python3 main.py FLAGS``: 0 when the run finished, 2 with one line for a user's mistake,
    128 + N when signal N stopped it (after a checkpoint)."""
    def run(argv):
        train(parse_args(argv))
    return run_command(run, argv)


if __name__ == '__main__':
    # gluoncv's deep models exceed Python's default recursion limit when hybridising
    sys.setrecursionlimit(2000)
    sys.exit(main())
