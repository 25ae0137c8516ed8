"""Loading a submission module and calling its functions the upstream way.

A submission is a Python file defining `get_batch_size`, `init_optimizer_state`,
`update_params`, `data_selection`, and optionally `prepare_for_eval` and
`get_eval_batch_size` (spec §2). It is imported once per process; the module
name mirrors upstream (`a/b/c.py` -> `a.b.c`), so absolute imports between files
of a submission package keep working, but no `__init__.py` is required.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import os
import sys
from types import ModuleType
from typing import Callable, Optional

REQUIRED = ('get_batch_size', 'init_optimizer_state', 'update_params', 'data_selection')
OPTIONAL = ('prepare_for_eval', 'get_eval_batch_size')


class SubmissionError(ValueError):
    """A submission that cannot be loaded or lacks required functions."""


@dataclasses.dataclass(frozen=True)
class Submission:
    """The functions of a loaded submission module."""

    path: str
    module: ModuleType
    get_batch_size: Callable
    init_optimizer_state: Callable
    update_params: Callable
    data_selection: Callable
    prepare_for_eval: Optional[Callable] = None
    get_eval_batch_size: Optional[Callable] = None

    @property
    def update_params_takes_train_state(self) -> bool:
        """Upstream passes `train_state` only when the signature names it."""
        return 'train_state' in inspect.signature(self.update_params).parameters

    def batch_size(self, workload_name: str, base_workload_name: str) -> int:
        """`get_batch_size`, retried with the base name on ValueError (upstream)."""
        try:
            return self.get_batch_size(workload_name)
        except ValueError:
            if base_workload_name == workload_name:
                raise
            return self.get_batch_size(base_workload_name)


def _module_name(path: str) -> str:
    rel = os.path.relpath(os.path.abspath(path))
    base = os.path.splitext(rel)[0]
    if base.startswith('..') or os.path.isabs(base):
        return 'algoperf_submission_' + os.path.basename(base)
    return base.replace(os.sep, '.')


def load(path: str) -> Submission:
    """Import the submission at `path` (a .py file) and check its functions."""
    if not path.endswith('.py'):
        raise SubmissionError(f'--submission_path={path}: must be a Python file (*.py).')
    if not os.path.isfile(path):
        raise SubmissionError(f'--submission_path={path}: file not found.')
    # v0.5 submissions import `algorithmic_efficiency.*`, v0.6 ones `algoperf.workloads.*`.
    from algoperf import upstream_alias  # noqa: PLC0415

    upstream_alias.install()
    name = _module_name(path)
    module = sys.modules.get(name)
    if module is None or os.path.abspath(getattr(module, '__file__', '')) != os.path.abspath(path):
        # CWD first on sys.path, as upstream runs from the repo root and
        # submissions import sibling modules by their dotted path.
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception:
            del sys.modules[name]
            raise
    missing = [f for f in REQUIRED if not callable(getattr(module, f, None))]
    if missing:
        raise SubmissionError(f'{path}: missing required function(s): {", ".join(missing)}.')
    fns = {f: getattr(module, f, None) for f in REQUIRED + OPTIONAL}
    return Submission(path=path, module=module, **fns)
