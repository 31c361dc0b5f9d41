"""The trainer of a run: steps, epochs, evaluation and model selection, checkpoints and signals.

The release splits its runner into a trainer and an evaluator (runner/evaluator.py); main.py
builds the pieces and hands them to TrainingLoop.
"""
import os
import sys

import numpy as np

from metrics.evaluation import format_metrics as fmt
from runner.checkpoint import random_state, save_best
from runner.devices import start_kvstore
from runner.evaluator import NonFiniteEmbeddings, evaluate_net, save_embeddings
from runner.interrupt import Stopped
from runner.options import selection_metric
from runner.progress import IterationBar
from runner.resume import flag_values
from utils.errors import UserError

# TensorBoard tag of the share of mined negatives that come from a synthetic point
SYNTHETIC_TAG = 'ee/synthetic_negative_fraction'


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def build_trainer(args, net, loss_fn, kvstore):
    """The gluon Trainer of the network's and the loss's parameters with the --optim flags."""
    import mxnet as mx
    opts = {'learning_rate': args.lr, 'wd': args.wd}
    if args.optim == 'sgd':
        opts['momentum'] = args.momentum
    if args.optim == 'adamw':
        import runner.adamw  # noqa: F401  registers the optimiser
    params = net.collect_params()
    params.update(loss_fn.collect_params())
    # The optimiser's states stay in this process (not in a kvstore), so that checkpoints hold them;
    # asynchronous training must update on the servers.
    return mx.gluon.Trainer(params, args.optim, opts, kvstore=kvstore,
                            update_on_kvstore='async' in args.kvstore)


def train_step(net, loss_fn, trainer, images, labels, ctx):
    """One optimisation step; returns (the mean loss (float), the batch's embeddings (B, embed_dim)
    and labels (B,), both on ctx[0]).

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
        # As the release: minimise the sum of the loss vector (HPHN: one entry per anchor, (B,);
        # the other losses: their mean, (1,)) with step(1).
        total = loss.sum()
    total.backward()
    if not trainer._kv_initialized:     # the first step: every worker starts from rank 0's parameters
        start_kvstore(trainer)
    trainer.step(1)
    return loss.mean().asscalar(), embeddings, labels


class TrainingLoop:
    """Epochs progress['epoch'] .. --epochs of one run (``run()`` returns the best test metrics).

    progress: {'epoch', 'iteration', 'best', 'best_chosen'} where to start: a run resumed
    mid-epoch skips progress['iteration'] batches of its first epoch, redrawn from that epoch's
    random state. stop: a runner.interrupt.StopFlag. Only the chief (rank 0) evaluates and logs.
    """

    def __init__(self, args, net, loss_fn, trainer, loaders, ctx, checkpoints, progress, stop, chief):
        import mxnet as mx
        self.args, self.net, self.loss_fn, self.trainer, self.loaders, self.ctx = args, net, loss_fn, trainer, loaders, ctx
        self.checkpoints, self.stop, self.chief = checkpoints, stop, chief
        self.steps = len(loaders.train)
        if self.steps == 0:
            raise UserError('an epoch holds no full batch of --batch_size %d' % args.batch_size)
        self.schedule = mx.lr_scheduler.MultiFactorScheduler(
            step=[e * self.steps for e in args.lr_decay_epochs], factor=args.lr_decay_factor, base_lr=args.lr)
        self.select = selection_metric(args)
        self.epoch, self.skip = progress['epoch'], progress['iteration']
        if self.epoch > args.epochs or not 0 <= self.skip < self.steps:
            raise UserError('cannot continue at epoch %d, iteration %d: --epochs is %d and an epoch holds %d '
                            'iterations (a checkpoint of another schedule, or a rewritten one)'
                            % (self.epoch, self.skip, args.epochs, self.steps))
        self.best, self.best_chosen = progress['best'], progress['best_chosen']
        self.loss_value, self.synthetic, self.global_step = float('nan'), None, self.epoch * self.steps + self.skip
        self.trunk_grad_req = {p.name: p.grad_req for p in net.backbone.collect_params().values()}
        self.summary = None

    def run(self):
        from tqdm import tqdm
        from runner.summary import Summary
        args = self.args
        if 'recall' not in args.eval_metrics and not args.select_metric:
            print('choosing the best epoch on %s, the first of --eval_metrics (--select_metric to change)'
                  % self.select)
        self.summary = Summary(args.save_dir) if self.chief else None
        epochs = tqdm(range(self.epoch, args.epochs), desc='epochs', file=sys.stdout, dynamic_ncols=True,
                      initial=self.epoch, total=args.epochs, disable=not self.chief)
        try:
            for epoch in epochs:
                self.train_epoch(epoch)
                if self.chief:
                    self.log_epoch(epoch, epochs)
                    if (epoch + 1) % args.eval_epoch_term == 0 or epoch + 1 == args.epochs:
                        tqdm.write('[epoch %d] %s' % (epoch + 1, self.evaluate_and_select(epoch + 1)),
                                   file=sys.stdout)
                if epoch + 1 == args.epochs or self.stop.signum or (
                        args.checkpoint_epochs and (epoch + 1) % args.checkpoint_epochs == 0):
                    path = self.save(epoch + 1)
                    if self.stop.signum:
                        raise Stopped('stopped by %s after epoch %d: checkpoint %s (continue with --resume)'
                                      % (self.stop.name, epoch + 1, path), self.stop.signum)
        finally:
            if self.summary:
                self.summary.close()
        return self.best

    def train_epoch(self, epoch):
        """One epoch's iterations; a signal stops it after the current one, with a checkpoint."""
        args, net = self.args, self.net
        self.loss_fn.set_epoch(epoch)
        if args.warmup_epochs and epoch <= args.warmup_epochs:     # warm-up: the trunk frozen, then thawed
            for p in net.backbone.collect_params().values():
                p.grad_req = 'null' if epoch < args.warmup_epochs else self.trunk_grad_req[p.name]
        epoch_random = random_state()       # a mid-epoch checkpoint redraws the epoch from here
        bar = IterationBar(self.steps, args.batch_size, 'epoch %d' % (epoch + 1), enabled=self.chief)
        try:
            self._train_iterations(epoch, epoch_random, bar)
        finally:
            bar.close()

    def _train_iterations(self, epoch, epoch_random, bar):
        """The iterations of train_epoch, each reported to the iteration bar."""
        args, net = self.args, self.net
        for i, (images, labels) in enumerate(self.loaders.train):
            if self.skip:                   # resumed mid-epoch: these batches were trained
                self.skip -= 1
                continue
            self.trainer.set_learning_rate(self.schedule(epoch * self.steps + i))
            self.loss_value, embeddings, labels = train_step(net, self.loss_fn, self.trainer, images, labels,
                                                             self.ctx)
            self.global_step = epoch * self.steps + i + 1
            if not np.isfinite(self.loss_value):
                raise self.diverged('loss is %s' % self.loss_value, epoch + 1, i + 1)
            bar.update(i + 1)
            if self.chief and i % args.summary_step == 0:
                self.log_step(embeddings, labels)
            if self.stop.signum:
                path = self.save(epoch, i + 1, epoch_random)
                # counted as the checkpoint is named (epoch_EEEEE_iter_IIIII) and as --resume reports it
                raise Stopped('stopped by %s after epoch %d + %d iterations: checkpoint %s (continue with --resume)'
                              % (self.stop.name, epoch, i + 1, path), self.stop.signum)

    def diverged(self, what, epoch, iteration=None):
        """The TrainingDiverged of ``what`` (loss is nan, ...) at 1-based ``epoch`` (and ``iteration``),
        naming the last good checkpoint."""
        last = self.checkpoints.latest()
        return TrainingDiverged('%s at epoch %d%s (global step %d); %s'
                                % (what, epoch, ', iteration %d' % iteration if iteration else '', self.global_step,
                                   'the last good checkpoint is %s (--resume)' % last if last
                                   else 'no checkpoint was written yet'))

    def log_step(self, embeddings, labels):
        self.summary.scalar('lr', self.trainer.learning_rate, self.global_step)
        self.summary.scalar('loss', self.loss_value, self.global_step)
        # what EE does: how often the mined negative comes from a synthetic point (README, Logs);
        # None for a loss without EE
        self.synthetic = self.loss_fn.synthetic_negative_fraction(embeddings, labels)
        if self.synthetic is not None:
            self.summary.scalar(SYNTHETIC_TAG, self.synthetic, self.global_step)

    def log_epoch(self, epoch, bar):
        self.summary.scalar('lr_epoch', self.trainer.learning_rate, epoch + 1)
        self.summary.scalar('loss_epoch', self.loss_value, epoch + 1)
        postfix = dict(loss='%.4f' % self.loss_value, lr='%.1e' % self.trainer.learning_rate)
        if self.synthetic is not None:
            postfix['synthetic'] = '%.2f' % self.synthetic
        bar.set_postfix(**postfix)

    def evaluate_and_select(self, epoch):
        """Evaluate, log, and keep the epoch when it is the best so far on the selection metric
        (validation classes when held out, else the test set, as the release). Returns the log line."""
        args, summary = self.args, self.summary
        metrics, embeddings = self.evaluate(epoch)
        summary.metrics(metrics, self.global_step, epoch)
        line, chosen = fmt(metrics), metrics
        if self.loaders.val:     # choose the epoch on held-out training classes, not on the test set
            chosen = self.evaluate(epoch, 'val')[0]
            summary.metrics(chosen, self.global_step, epoch, prefix='val_')
            line = 'val %s | test %s' % (fmt(chosen), line)
        if chosen.get(self.select, -1.0) > (-1.0 if self.best_chosen is None else self.best_chosen):
            self.best_chosen, self.best = chosen[self.select], dict(metrics)
            if self.select in metrics:
                summary.metrics({self.select: metrics[self.select]}, self.global_step, epoch, suffix='/best')
            save_best(self.net, args.save_dir, epoch, args.keep_best)
            if args.save_embeddings:
                save_embeddings(embeddings, os.path.join(args.save_dir, 'embeddings'))
            line += '  (best)'
        summary.flush()
        return line

    def evaluate(self, epoch, split='test'):
        """evaluate_net of ``split`` after ``epoch`` epochs; weights that diverged in the last steps
        (the loss still finite) give NaN or infinite embeddings: the same line as a NaN loss."""
        try:
            return evaluate_net(self.net, self.loaders, self.ctx, self.args, split=split)
        except NonFiniteEmbeddings as exc:
            raise self.diverged('the weights diverged: %s' % exc, epoch) from exc

    def save(self, epoch, iteration=0, epoch_random=None):
        """The chief's checkpoint after ``epoch`` epochs and ``iteration`` steps of the next."""
        if not self.chief:
            return None
        state = {'best': self.best, 'best_chosen': self.best_chosen, 'global_step': self.global_step,
                 'args': flag_values(self.args), 'epoch_random': epoch_random}
        self.summary.flush()        # the logs up to the checkpoint, before it exists
        return self.checkpoints.save(epoch, self.net, self.trainer, self.loss_fn, state, iteration)
