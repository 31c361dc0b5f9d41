"""What --resume continues from, and which of the run's flags a resumed run may change.

A checkpoint records the flags of the run that wrote it (state.json, ``args``). On resume, by
each flag's class in ON_RESUME:
  - REFUSED flags define the model, the loss or the data (backbone, embed_dim, loss and its
    parameters, n_inner_pts, optim, data set, batch layout, seed, ...) and must be the same: each
    difference is named, and the run stops;
  - APPLIED flags (schedule length, learning rate and its schedule, weight decay, evaluation,
    logging, checkpointing, workers, devices, data location) may change: each change is said in
    one line; main.py writes them to args.txt;
  - IGNORED flags say how this invocation starts, not what is trained.
"""
import os

from metrics.evaluation import format_metrics
from runner.checkpoint import Checkpointer, checkpoint_name, set_random_state
from utils.errors import UserError

# What a resumed run does with each of main.py's flags; every flag of ``main.py --help`` has its
# class here (tests/test_resume_flags.py names any flag without one):
REFUSED = 'refused'     # it changes the model, the loss or the data: the run stops, naming it
APPLIED = 'applied'     # how long, how fast, what is evaluated and logged, where it runs: applied
IGNORED = 'ignored'     # how this invocation starts (or unused): not compared
ON_RESUME = {
    # data: which images and how they are batched define what is trained; where they are and how
    # they are read do not
    'data_name': REFUSED, 'train_class_ratio': REFUSED, 'val_class_ratio': REFUSED, 'image_size': REFUSED,
    'batch_size': REFUSED, 'num_instances': REFUSED,
    'data_dir': APPLIED, 'check_images': APPLIED, 'skip_bad_images': APPLIED, 'cache_images': APPLIED,
    'num_workers': APPLIED, 'max_image_pixels': APPLIED,
    # model (the checkpoint holds the weights, so where the ImageNet ones came from no longer matters)
    'backbone': REFUSED, 'embed_dim': REFUSED, 'pretrained': REFUSED, 'pooling': REFUSED, 'bn_freeze': REFUSED,
    'pretrained_path': APPLIED, 'init_from': IGNORED,
    # loss: every parameter of every loss; the multiplier of the proxies' learning rate is the optimiser's
    'loss': REFUSED, 'n_inner_pts': REFUSED, 'ee_l2norm': REFUSED, 'margin': REFUSED, 'ee_negative_grad': REFUSED,
    'soft_margin': REFUSED, 'lifted_margin': REFUSED, 'npair_l2_reg': REFUSED, 'ms_alpha': REFUSED,
    'ms_beta': REFUSED, 'ms_base': REFUSED, 'ms_epsilon': REFUSED, 'pa_margin': REFUSED, 'pa_alpha': REFUSED,
    'n_expansion': REFUSED, 'see_lambda': REFUSED, 'max_thresh': REFUSED, 'min_thresh': REFUSED,
    'warmup_epochs': REFUSED, 'proxy_lr_mult': APPLIED,
    # optimisation: the optimiser's kind and the seed are fixed; its schedule may change
    'optim': REFUSED, 'seed': REFUSED,
    'lr': APPLIED, 'wd': APPLIED, 'momentum': APPLIED, 'base_lr_mult': APPLIED, 'lr_decay_factor': APPLIED,
    'lr_decay_epochs': APPLIED, 'epochs': APPLIED, 'start_epoch': IGNORED,
    # evaluation and logging
    'eval_epoch_term': APPLIED, 'recallk': APPLIED, 'eval_metrics': APPLIED, 'select_metric': APPLIED,
    'eval_qe': APPLIED, 'eval_dba': APPLIED, 'summary_step': APPLIED, 'save_embeddings': APPLIED,
    'save_dir': IGNORED, 'overwrite': IGNORED,
    # checkpoints
    'checkpoint_epochs': APPLIED, 'keep_checkpoints': APPLIED, 'keep_best': APPLIED, 'resume': IGNORED,
    # devices, and the official command line's unused flags
    'ctx': APPLIED, 'gpu_idx': APPLIED, 'kvstore': APPLIED, 'dist_timeout': APPLIED,
    'config': IGNORED, 'debug': IGNORED, 'alpha': IGNORED, 'beta': IGNORED, 'sigma': IGNORED,
}


def flag_values(args):
    """The run's flags as JSON values (lists for the comma-separated ones)."""
    return {key: list(v) if isinstance(v, tuple) else v for key, v in sorted(vars(args).items())}


def _show(value):
    return ','.join(str(v) for v in value) if isinstance(value, list) else str(value)


def compare_flags(saved, current, checkpoint):
    """Lines for the APPLIED flags that differ; UserError naming every REFUSED flag that differs.

    saved, current: flag_values of the checkpoint's run and of this one. Flags only one side knows
    (another version of main.py) are not compared.
    """
    fixed, applied = [], []
    for key in sorted(set(saved) & set(current)):
        kind = ON_RESUME.get(key, REFUSED)      # a flag without a class is refused: the safe side
        if kind != IGNORED and saved[key] != current[key]:
            line = '--%s %s -> %s' % (key, _show(saved[key]), _show(current[key]))
            (applied if kind == APPLIED else fixed).append(line)
    if fixed:
        raise UserError('--resume %s: these flags change the model, the loss or the data, so it cannot continue '
                        'with them: %s (use the flags of its args.txt, or a new --save_dir)'
                        % (checkpoint, '; '.join(fixed)))
    return ['resume: %s (applied)' % line for line in applied]


def resume_path(resume, start_epoch, checkpoints, warn):
    """(folder, its verified state) of the checkpoint --resume asks for, or (None, None) when
    'auto' finds none.

    resume: 'auto' (the newest usable checkpoint in --save_dir; corrupt newer ones are reported
    through ``warn`` and skipped) or a folder; start_epoch: with 'auto', that epoch's checkpoint.
    """
    if resume != 'auto':
        if not os.path.isfile(os.path.join(resume, 'manifest.json')) and \
                not os.path.isfile(os.path.join(resume, 'state.pkl')):
            raise UserError('--resume %s is not a checkpoint folder (expected %s/manifest.json)' % (resume, resume))
        return resume, Checkpointer.read_state(resume)
    if start_epoch:
        path = os.path.join(checkpoints.root, checkpoint_name(start_epoch))
        if path not in checkpoints.paths():
            raise UserError('--resume --start_epoch %d: no checkpoint %s; there are: %s'
                            % (start_epoch, path, ', '.join(checkpoints.paths()) or 'none'))
        return path, Checkpointer.read_state(path)
    path = checkpoints.newest_valid(warn)
    return (path, Checkpointer.read_state(path, verified=True)) if path else (None, None)


class Resume:
    """What a run starts from: a checkpoint folder (``path``, its ``state``) or nothing."""

    def __init__(self, args, path=None, state=None):
        self.args, self.path, self.state = args, path, state

    def restore(self, net, trainer, loss, ctx):
        """Load the checkpoint (if any) into net, trainer and loss; returns the loop's progress
        {'epoch', 'iteration', 'best', 'best_chosen'}."""
        progress = {'epoch': self.args.start_epoch, 'iteration': 0, 'best': {}, 'best_chosen': None}
        if not self.path:
            if self.args.resume:
                print('no checkpoint in %s: starting afresh' % os.path.join(self.args.save_dir, 'checkpoints'))
            return progress
        state = Checkpointer.load(self.path, net, trainer, loss, ctx, self.state)
        progress.update((k, state[k]) for k in progress if k in state)
        rebase_best(progress, state.get('args', {}), self.args)
        if progress['iteration']:       # stopped mid-epoch: redraw that epoch from its start
            set_random_state(state['epoch_random'])
        print('resumed from %s: epoch %d%s, best %s' % (
            self.path, progress['epoch'], ' + %d iterations' % progress['iteration'] if progress['iteration'] else '',
            format_metrics(progress['best']) if progress['best'] else 'none yet (no evaluation so far)'))
        return progress


def rebase_best(progress, saved, args):
    """Forget the best so far when the metric that chooses the best epoch changed on resume
    (--select_metric, or --recallk/--eval_metrics behind the default): the saved best value is of
    the old metric, and comparing the new one with it would keep a worse epoch. The next evaluation
    is then the best so far; the model_epoch_*.params of earlier bests stay on disk."""
    from argparse import Namespace

    from runner.options import selection_metric
    try:
        old = selection_metric(Namespace(**{k: saved[k] for k in ('select_metric', 'recallk', 'eval_metrics')}))
    except (KeyError, TypeError, IndexError):   # a checkpoint of a version without these flags
        return
    new = selection_metric(args)
    if old != new and progress['best_chosen'] is not None:
        print('resume: the best epoch is now chosen on %s (was %s): the best so far restarts at the next '
              'evaluation' % (new, old))
        progress['best'], progress['best_chosen'] = {}, None


def resume_from_checkpoint(args, checkpoints, warn):
    """The Resume of --resume (none without it), its recorded flags checked against ``args``: the
    changes allowed are said in one line each, the others stop the run (compare_flags)."""
    if not args.resume:
        return Resume(args)
    path, state = resume_path(args.resume, args.start_epoch, checkpoints, warn)
    if not path:
        return Resume(args)
    for line in compare_flags(state.get('args', {}), flag_values(args), path):
        print(line)
    return Resume(args, path, state)
