"""What --resume continues from, and which of the run's flags a resumed run may change.

A checkpoint records the flags of the run that wrote it (state.json, ``args``). On resume:
  - flags that define the model, the loss or the data (backbone, embed_dim, loss and its
    parameters, n_inner_pts, optim, data set, batch layout, seed, ...) must be the same: each
    difference is named, and the run stops;
  - the flags in MAY_CHANGE (schedule length, learning rate and its schedule, weight decay,
    evaluation, logging, checkpointing, workers, devices, data location) are applied, each change
    said in one line; main.py writes them to args.txt;
  - IGNORED flags say how to run, not what is trained.
"""
import os

from metrics.evaluation import format_metrics
from runner.checkpoint import Checkpointer, checkpoint_name, set_random_state
from utils.errors import UserError

MAY_CHANGE = frozenset((
    'epochs', 'lr', 'lr_decay_factor', 'lr_decay_epochs', 'wd', 'momentum', 'base_lr_mult', 'proxy_lr_mult',
    'eval_epoch_term', 'recallk', 'eval_metrics', 'select_metric', 'summary_step', 'save_embeddings',
    'checkpoint_epochs', 'keep_checkpoints', 'num_workers', 'ctx', 'gpu_idx', 'kvstore', 'check_images',
    'skip_bad_images', 'data_dir', 'pretrained_path', 'eval_qe', 'eval_dba', 'cache_images', 'max_image_pixels'))
IGNORED = frozenset(('config', 'resume', 'debug', 'start_epoch', 'save_dir', 'overwrite', 'init_from',
                     'alpha', 'beta', 'sigma'))


def flag_values(args):
    """The run's flags as JSON values (lists for the comma-separated ones)."""
    return {key: list(v) if isinstance(v, tuple) else v for key, v in sorted(vars(args).items())}


def _show(value):
    return ','.join(str(v) for v in value) if isinstance(value, list) else str(value)


def compare_flags(saved, current, checkpoint):
    """Lines for the MAY_CHANGE flags that differ; UserError naming every other flag that differs.

    saved, current: flag_values of the checkpoint's run and of this one. Flags only one side knows
    (another version of main.py) are not compared.
    """
    fixed, applied = [], []
    for key in sorted((set(saved) & set(current)) - IGNORED):
        if saved[key] != current[key]:
            line = '--%s %s -> %s' % (key, _show(saved[key]), _show(current[key]))
            (applied if key in MAY_CHANGE else fixed).append(line)
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
            format_metrics(progress['best'])))
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
