"""The packages' layers point one way (README, Layout): a module imports only its own package and
packages of a lower layer, wherever the import stands (module level or inside a function)."""
import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# utils at the bottom; data, model, loss and metrics side by side (none imports another);
# the runner above them; the tools on top.
LAYER = {'utils': 0, 'data': 1, 'model': 1, 'loss': 1, 'metrics': 1, 'runner': 2, 'tools': 3}


def _imports(tree, module_level_only=False):
    """(top-level package, line) of every absolute import in the tree."""
    nodes = tree.body if module_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split('.')[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split('.')[0], node.lineno


def _modules(package):
    folder = os.path.join(REPO, package)
    for name in sorted(os.listdir(folder)):
        if name.endswith('.py'):
            path = os.path.join(folder, name)
            with open(path) as f:
                yield os.path.relpath(path, REPO), ast.parse(f.read())


@pytest.mark.parametrize('package', sorted(LAYER))
def test_imports_point_down(package):
    wrong = ['%s:%d imports %s' % (path, line, top)
             for path, tree in _modules(package)
             for top, line in _imports(tree)
             if top in LAYER and top != package and LAYER[top] >= LAYER[package]]
    assert not wrong, wrong


def test_metrics_import_no_mxnet_at_module_level():
    # the metrics run on saved embeddings without MXNet; a context brings it in lazily
    wrong = ['%s:%d' % (path, line) for path, tree in _modules('metrics')
             for top, line in _imports(tree, module_level_only=True) if top == 'mxnet']
    assert not wrong, wrong


def test_utils_holds_only_shared_helpers():
    # what every layer uses, and no more: a new module here needs a reason (README, Layout)
    names = sorted(n for n in os.listdir(os.path.join(REPO, 'utils')) if n.endswith('.py'))
    assert names == ['__init__.py', 'atomic.py', 'errors.py', 'events.py', 'mxnet_compat.py']
