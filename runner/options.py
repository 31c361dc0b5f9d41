"""The command line of main.py: its flags, --config files, and the checks that span flags.

Flags and defaults follow the official release (docs/official_setup.md); a data set may bring
defaults of its own for flags the command line does not set (digits: a one-minute CPU schedule).
Every mistake is a one-line UserError (utils/errors.py); a class's own ValueError becomes one
through flag_errors.
"""
import argparse
import os
import re
import sys
from contextlib import contextmanager

from utils.atomic import atomic_file
from utils.errors import OneLineParser, UserError


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


def loss_name(s):
    """--loss accepts the official spelling hphn-triplet too."""
    return s.strip().replace('-', '_')


# --margin when the command line does not set it: each triplet loss's own value
MARGIN_DEFAULTS = {'hphn_triplet': 1e-5,   # the official main.py (docs/official_setup.md 4.1)
                   'triplet': 0.2}         # FaceNet's, TripletLoss's and the configs' (docs/pair_losses.md 3.6)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each default once: none appended to a help that states its own, to a switch, or to None."""

    def _get_help_string(self, action):
        if '%(default)' in action.help or 'default:' in action.help or action.default is None \
                or action.nargs == 0:
            return action.help
        return action.help + ' (default: %(default)s)'


def _group(parser, title, description=None):
    """add_argument of a new argument group of ``parser``: records store_true flags in
    parser.switches, and gives a flag the default data set (digits) sets otherwise its two defaults."""
    from data.registry import DEFAULTS
    group = parser.add_argument_group(title, description)

    def add(*args, **kwargs):
        action = group.add_argument(*args, **kwargs)
        if kwargs.get('action') == 'store_true':
            parser.switches.add(action.dest)
        if action.dest in DEFAULTS['digits']:
            action.help += ' (default: %%(default)s; digits: %s)' % (DEFAULTS['digits'][action.dest],)
        return action
    return add


def build_parser():
    """main.py's flags: every official one with the release's default (docs/official_setup.md), and ours."""
    p = OneLineParser(description='Embedding Expansion (CVPR 2020) in MXNet Gluon. The defaults are the '
                      'official release\'s; "digits: X" marks the default of the default --data_name digits '
                      '(a one-minute offline demo on the CPU).', formatter_class=HelpFormatter)
    general = _group(p, 'general')
    general('--config', default=None, help='a file of main.py flags (one --flag=value per line, '
                                           '# comments); the command line overrides it')
    general('--debug', action='store_true', help='show the traceback of input errors')
    _data_flags(_group(p, 'data'))
    _model_flags(_group(p, 'model'))
    _loss_flags(_group(p, 'loss'))
    _optimisation_flags(_group(p, 'optimisation'))
    _evaluation_flags(_group(p, 'evaluation and logging'))
    _checkpoints_flags(_group(p, 'checkpoints'))
    _devices_flags(_group(p, 'devices'))
    compatibility = _group(p, 'compatibility', 'accepted and unused: kept only for compatibility with the '
                                               'official command line')
    for name, value in (('alpha', 10.0), ('beta', 1.2), ('sigma', 0.5)):
        compatibility('--' + name, default=value, type=float, help='unused')
    return p


def _data_flags(a):
    from data.registry import DATA_DIRS, PREPARED
    from data.image_header import DEFAULT_MAX_PIXELS
    a('--data_name', default='digits',
      help='digits (offline, bundled) | cars196 (official: car196) | cub200 | sop | inshop | folder')
    a('--data_dir', default=None,
      help='the data set\'s folder (python3 -m data.prepare makes it); default: per --data_name, %s; '
           'required with folder' % ', '.join('%s %s' % (name, DATA_DIRS[name]) for name in PREPARED))
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
    a('--max_image_pixels', default=DEFAULT_MAX_PIXELS, type=int,
      help='refuse (or with --skip_bad_images leave out) images of more pixels, read from their header '
           'before decoding: a small file can claim a huge image')
    a('--batch_size', default=128, type=int, help='images per training batch')
    a('--num_instances', default=32, type=int, help='images per class in a batch (even with EE)')
    a('--num_workers', default=10, type=int, help='DataLoader worker processes (0: in the main process)')


def _model_flags(a):
    from model import BACKBONES
    a('--backbone', default='googlenet', choices=tuple(BACKBONES), help='backbone trunk from the model registry')
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


def _loss_flags(a):
    from loss import LOSSES
    a('--loss', default='hphn_triplet', type=loss_name, choices=tuple(LOSSES),
      help='the loss (official spelling hphn-triplet accepted)')
    a('--n_inner_pts', default=2, type=int, help='synthetic points per pair (Embedding Expansion); 0: no EE')
    a('--ee_l2norm', default=True, type=str2bool, help='L2-normalise the synthetic points')
    a('--margin', default=None, type=float,
      help='triplet margin; default: %s' % ', '.join('%g with %s' % (v, k) for k, v in MARGIN_DEFAULTS.items()))
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


def _optimisation_flags(a):
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


def _evaluation_flags(a):
    a('--eval_epoch_term', default=50, type=int, help='evaluate every this many epochs')
    a('--recallk', default='1,2,4,8', type=int_list, help='K values of Recall@K')
    a('--eval_metrics', default='recall,nmi',
      help='comma-separated subset of recall, map_at_r, r_precision, nmi, f1')
    a('--select_metric', default=None,
      help='the metric that chooses the best epoch, e.g. R@1, MAP@R, NMI (default: R@K of the first --recallk, '
           'or the first of --eval_metrics without recall)')
    a('--eval_qe', default=0, type=int,
      help='also log retrieval metrics after average query expansion over K neighbours (R@1_qe, ...)')
    a('--eval_dba', default=0, type=int,
      help='also log retrieval metrics after database augmentation over K neighbours (R@1_dba, ...)')
    a('--summary_step', default=10, type=int, help='log loss and lr every this many iterations')
    a('--save_embeddings', action='store_true',
      help='write the test embeddings and labels of the best epoch as .npy under SAVE_DIR/embeddings')
    a('--save_dir', default='./log/will/be/saved/here',
      help='logs and parameters go here; one run per folder (a folder of an earlier run needs --resume or '
           '--overwrite)')
    a('--overwrite', action='store_true',
      help='--save_dir holds an earlier run: move it aside to SAVE_DIR.old-N (never deleted) and start afresh')


def _checkpoints_flags(a):
    a('--checkpoint_epochs', default=10, type=int,
      help='write a resumable checkpoint every this many epochs (and at the end); 0: only at the end')
    a('--keep_checkpoints', default=2, type=int, help='how many of the newest checkpoints to keep')
    a('--keep_best', default=1, type=int,
      help='how many of the newest best-epoch files (model_epoch_NNNNN.params, 25 MB each for GoogLeNet) to '
           'keep; an older one goes only after a newer one is safely written. 0: every improvement, as the release')
    a('--resume', nargs='?', const='auto', default=None,
      help='continue from the latest checkpoint in --save_dir (none there: start afresh), or from the '
           'checkpoint folder given; with --start_epoch N, from the checkpoint of epoch N')


def _devices_flags(a):
    a('--ctx', default=None, help='devices: cpu | cpu:0,cpu:1 | gpu:0,gpu:1 (several: data parallel)')
    a('--gpu_idx', default=None, help='the official alias of --ctx: GPU ids, e.g. 0 or 0,1')
    a('--kvstore', default='device',
      help='gradient aggregation: device | local, or dist_sync | dist_async across machines')
    a('--dist_timeout', default=300.0, type=float,
      help='dist_* --kvstore: give up (exit 2) when the scheduler, servers and workers have not all joined '
           'within this many seconds')


# A --config file is a few hundred bytes; beyond this it is not one (or /dev/zero)
MAX_CONFIG_BYTES = 1 << 20


def read_config(path):
    """The flags of a config file: one ``--flag=value`` (or ``--flag value``) per line, # comments.

    Only what write_config could have written is read: a regular text file (not a FIFO or device,
    which would block or never end) of at most MAX_CONFIG_BYTES, whose values hold no control
    character (a quoted newline would let one value pose as further flags)."""
    import shlex
    import stat
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise UserError('argument --config: %s is not a regular file' % path)
        with open(path, 'rb') as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise UserError('argument --config: %s is larger than %d bytes: not a file of flags'
                            % (path, MAX_CONFIG_BYTES))
        tokens = shlex.split(data.decode('utf-8'), comments=True)
    except OSError as exc:
        raise UserError('argument --config: cannot read %s: %s' % (path, exc.strerror)) from exc
    except UnicodeDecodeError:
        raise UserError('argument --config: %s is not a text file of flags' % path) from None
    except ValueError as exc:       # shlex: an unclosed quote
        raise UserError('argument --config: cannot parse %s: %s' % (path, exc)) from None
    for token in tokens:
        if _control(token):
            raise UserError('argument --config: %s holds a value with a control character (%r); '
                            'main.py never writes one' % (path, token[:80]))
    return tokens


def _control(text):
    """The first control character (newline, tab, escape, DEL, C1) of text, or None."""
    import unicodedata
    return next((c for c in text if unicodedata.category(c) == 'Cc'), None)


def check_text_flags(args):
    """Every string flag (paths above all) is plain text: no control character, which args.txt,
    the logs and the tools' output would carry on as line breaks or escapes, and valid UTF-8 (a
    name in another encoding cannot be written to args.txt or printed). UserError naming the flag."""
    for key, value in sorted(vars(args).items()):
        if not isinstance(value, str):
            continue
        shown = value.encode('utf-8', 'surrogateescape').decode('utf-8', 'backslashreplace')
        if _control(value):
            raise UserError('--%s %r holds a control character (%r); give a name without one'
                            % (key, shown, _control(value)))
        try:
            value.encode('utf-8')
        except UnicodeEncodeError:
            raise UserError('--%s %s is not valid UTF-8 text; rename it (or link to it) with a UTF-8 name'
                            % (key, shown)) from None


def write_config(args, path):
    """The run's flags as a --config file, so that ``--config SAVE_DIR/args.txt`` repeats the run.
    Written to a temporary name, fsynced and renamed: a crash leaves the old file or the new one."""
    import shlex
    skip = {'config', 'resume', 'debug', 'start_epoch', 'overwrite'}
    switches = build_parser().switches
    check_text_flags(args)      # every line below is then one flag and its quoted value
    lines = ['# written by main.py; python3 main.py --config SAVE_DIR/args.txt repeats this run']
    for key, value in sorted(vars(args).items()):
        if key in skip or value is None or (key in switches and not value):
            continue
        if key in switches:
            lines.append('--' + key)
            continue
        if isinstance(value, (list, tuple)):
            value = ','.join(str(v) for v in value)
        lines.append('--%s=%s' % (key, shlex.quote(str(value))))
    try:
        with atomic_file(path, 'w', encoding='utf-8') as f:
            f.write('\n'.join(lines) + '\n')
    except OSError as exc:
        raise UserError('cannot write %s: %s' % (path, exc.strerror)) from exc


def parse_args(argv=None):
    from data.registry import DATA_DIRS, DEFAULTS
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    known, _ = parser.parse_known_args(argv)
    if known.config:
        argv = read_config(known.config) + argv     # later flags win: the command line overrides
        known, _ = parser.parse_known_args(argv)
    parser.set_defaults(**DEFAULTS.get(known.data_name.lower(), {}))
    args = parser.parse_args(argv)
    if args.data_dir is None:
        args.data_dir = DATA_DIRS.get(args.data_name.lower())
    if args.margin is None:
        args.margin = MARGIN_DEFAULTS.get(args.loss)
    check_text_flags(args)
    args.eval_metrics = [m.strip() for m in args.eval_metrics.split(',') if m.strip()]
    return args


def check_args(args, num_devices):
    """Ranges of single flags and combinations of several that no class owns; each a one-line
    UserError naming the flags. What a class checks itself (the loss's num_instances, the
    sampler's batch layout, SEE's bounds) it reports as ValueError, turned into one line by
    flag_errors."""
    from data.sampler import check_batch_layout
    from loss import LOSSES
    from loss.pair_loss import PairLoss
    from metrics.evaluation import METRICS
    with flag_errors():         # the classes' own checks, before any data is read
        check_batch_layout(args.batch_size, args.num_instances)
        if issubclass(LOSSES[args.loss], PairLoss):
            LOSSES[args.loss].check_layout(args.num_instances, args.n_inner_pts)
    check_ranges(args)
    if args.batch_size % num_devices:
        raise UserError('--batch_size (%d) must split evenly over the %d devices of --ctx'
                        % (args.batch_size, num_devices))
    if sorted(set(args.lr_decay_epochs)) != args.lr_decay_epochs:
        raise UserError('--lr_decay_epochs must be increasing, got %s' % args.lr_decay_epochs)
    unknown = [m for m in args.eval_metrics if m not in METRICS]
    if unknown or not args.eval_metrics:
        raise UserError('--eval_metrics: unknown %s; choose from %s' % (unknown, ', '.join(METRICS)))
    if not 0 <= args.start_epoch < args.epochs:
        raise UserError('--start_epoch (%d) must be in [0, --epochs (%d))' % (args.start_epoch, args.epochs))
    keys = metric_keys(args)
    if args.select_metric and args.select_metric not in keys:
        raise UserError('--select_metric %s is not evaluated; choose one of %s' % (args.select_metric, ', '.join(keys)))


MIN_IMAGE_SIZE = 32
# The interval of each numeric flag; a float flag must also be finite (NaN passes no comparison and
# would reach the optimiser: --momentum nan trains as 0). The upper ends of sizes stop a flag from
# asking for more memory than any machine has, before anything is built.
# (--val_class_ratio: data/validation.py checks its range; --batch_size and --num_instances: the sampler)
RANGES = {
    'lr': '(0, inf)', 'wd': '[0, inf)', 'momentum': '[0, 1)', 'base_lr_mult': '[0, inf)',
    'proxy_lr_mult': '[0, inf)', 'lr_decay_factor': '(0, 1]', 'seed': '[0, 2147483647]',
    'embed_dim': '[1, 16384]', 'image_size': '[%d, 2048]' % MIN_IMAGE_SIZE, 'num_workers': '[0, 256]',
    'max_image_pixels': '[1, inf)', 'train_class_ratio': '(0, 1)',
    'margin': '[0, inf)', 'lifted_margin': '[0, inf)', 'npair_l2_reg': '[0, inf)', 'ms_alpha': '(0, inf)',
    'ms_beta': '(0, inf)', 'ms_epsilon': '[0, inf)', 'pa_margin': '[0, inf)', 'pa_alpha': '(0, inf)',
    'see_lambda': '[0, inf)', 'warmup_epochs': '[0, inf)', 'epochs': '[1, inf)', 'eval_epoch_term': '[1, inf)',
    'summary_step': '[1, inf)', 'eval_qe': '[0, inf)', 'eval_dba': '[0, inf)', 'checkpoint_epochs': '[0, inf)',
    'keep_checkpoints': '[1, inf)', 'keep_best': '[0, inf)',
}
# numeric flags whose range a class or another check owns, or that have none
RANGES_ELSEWHERE = frozenset((
    'val_class_ratio', 'batch_size', 'num_instances',         # data/validation.py, data/sampler.py
    'n_inner_pts', 'n_expansion', 'max_thresh', 'min_thresh',  # the losses (EE, SEE)
    'start_epoch',                                              # in [0, --epochs): check_args
    'dist_timeout',                                             # runner/devices.py
    'ms_base',                                                  # any finite offset
    'alpha', 'beta', 'sigma'))                                  # unused


def in_interval(value, interval):
    """Whether ``value`` lies in ``interval``, written '[low, high)' and so on (inf: no bound)."""
    low, high = (float(end) for end in interval[1:-1].split(','))
    return (low < value or (interval[0] == '[' and value == low)) and \
        (value < high or (interval[-1] == ']' and value == high))


def check_ranges(args):
    """UserError naming the first float flag that is not finite, or the first flag outside RANGES."""
    import math
    for action in build_parser()._actions:
        value = getattr(args, action.dest, None)
        if action.type is float and value is not None and not math.isfinite(value):
            raise UserError('--%s must be a finite number, got %s' % (action.dest, value))
    for dest, interval in RANGES.items():
        value = getattr(args, dest, None)
        if value is not None and not in_interval(value, interval):
            raise UserError('--%s must be in %s, got %s' % (dest, interval, value))


# the key each --eval_metrics entry reports (recall: R@K per K)
METRIC_KEYS = {'map_at_r': 'MAP@R', 'r_precision': 'RP', 'nmi': 'NMI', 'f1': 'F1'}


def metric_keys(args):
    """The keys of the metrics the run evaluates: R@K per --recallk, MAP@R, RP, NMI, F1."""
    return [key for m in args.eval_metrics
            for key in (['R@%d' % k for k in args.recallk] if m == 'recall' else [METRIC_KEYS[m]])]


def selection_metric(args):
    """The metric key that chooses the best epoch: --select_metric, else R@K of the first K when
    recall is evaluated, else the first of --eval_metrics."""
    if args.select_metric:
        return args.select_metric
    return 'R@%d' % args.recallk[0] if 'recall' in args.eval_metrics else metric_keys(args)[0]


@contextmanager
def flag_errors():
    """Turn the ValueError of a class given the flags' values into the command line's one line:
    a parameter named like a flag (num_instances) is named as the flag (--num_instances)."""
    try:
        yield
    except ValueError as exc:
        dests = sorted(build_parser().parse_args([]).__dict__, key=len, reverse=True)
        message = re.sub(r'(?<![-\w])(%s)(?!\w)' % '|'.join(dests), r'--\1', str(exc))
        raise UserError(message) from exc
