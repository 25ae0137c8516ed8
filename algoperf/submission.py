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
import logging
import operator
import os
import sys
import traceback
from types import ModuleType
from typing import Callable, Optional, Tuple

from algoperf.errors import UserError

_log = logging.getLogger(__name__)

REQUIRED = ('get_batch_size', 'init_optimizer_state', 'update_params', 'data_selection')
OPTIONAL = ('prepare_for_eval', 'get_eval_batch_size')


class SubmissionError(UserError):
    """A submission that cannot be loaded, lacks required functions, or answers wrongly."""


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

    def batch_size(self, workload_name: str, base_workload_name: str, stands_in_for: Optional[str] = None) -> int:
        """The global batch size `get_batch_size` gives (see `resolve_batch_size`)."""
        return self.resolve_batch_size(workload_name, base_workload_name, stands_in_for)[0]

    def resolve_batch_size(
        self, workload_name: str, base_workload_name: str, stands_in_for: Optional[str] = None
    ) -> Tuple[int, str]:
        """(batch size, the name `get_batch_size` answered for).

        Asks for `workload_name`; if that raises, for the base workload (upstream
        retries on ValueError), then for the upstream workload a dev workload stands
        in for (digits -> mnist), so upstream submissions whose tables lack our dev
        workloads still run. Raises SubmissionError naming the file, the workload
        and every exception when no name is answered, or when the answer is not a
        positive int.
        """
        names = [workload_name]
        for alt in (base_workload_name, stands_in_for):
            if alt and alt not in names:
                names.append(alt)
        failures = []
        for name in names:
            try:
                value = self.get_batch_size(name)
            except TypeError as e:
                if _raised_by_call(e):
                    raise SubmissionError(
                        f'{self.path}: get_batch_size({name!r}) cannot be called with one workload name '
                        f'(signature {_signature(self.get_batch_size)}): {e}'
                    ) from e
                failures.append((name, e))
                continue
            except Exception as e:  # noqa: BLE001 - any exception is the submission's answer "no"
                failures.append((name, e))
                continue
            if name != workload_name:
                why = 'its base workload' if name == base_workload_name else f'{workload_name} stands in for it'
                _log.info('%s: get_batch_size(%r) raised %s; using get_batch_size(%r) (%s).',
                          self.path, workload_name, _one_line(failures[0][1]), name, why)
            return _positive_int(self.path, f'get_batch_size({name!r})', value), name
        tried = '; '.join(f'get_batch_size({n!r}) raised {_one_line(e)}' for n, e in failures)
        raise SubmissionError(f'{self.path}: no batch size for workload {workload_name!r}: {tried}.') from failures[-1][1]

    def eval_batch_size(self, workload_name: str) -> Optional[int]:
        """`get_eval_batch_size(workload_name)` checked, or None when the submission has none."""
        if self.get_eval_batch_size is None:
            return None
        try:
            value = self.get_eval_batch_size(workload_name)
        except Exception as e:  # noqa: BLE001
            raise SubmissionError(
                f'{self.path}: get_eval_batch_size({workload_name!r}) raised {_one_line(e)}.'
            ) from e
        return _positive_int(self.path, f'get_eval_batch_size({workload_name!r})', value)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f'{type(e).__name__}: {text[0]}' if text else type(e).__name__


def _signature(fn: Callable) -> str:
    try:
        return f'{fn.__name__}{inspect.signature(fn)}'
    except (TypeError, ValueError):
        return repr(fn)


def _raised_by_call(e: TypeError) -> bool:
    """True when a TypeError comes from binding the arguments, not from inside the function."""
    tb = e.__traceback__
    # The call site is this module's frame; one more frame means the function body ran.
    return tb is not None and tb.tb_next is None


def _positive_int(path: str, call: str, value) -> int:
    if isinstance(value, bool):
        raise SubmissionError(f'{path}: {call} returned {value!r}; expected a positive int.')
    try:
        number = operator.index(value)  # int, numpy integers; not floats or strings.
    except TypeError:
        raise SubmissionError(
            f'{path}: {call} returned {value!r} ({type(value).__name__}); expected a positive int.'
        ) from None
    if number <= 0:
        raise SubmissionError(f'{path}: {call} returned {number}; expected a positive int.')
    return number


def _import_error_message(path: str, e: BaseException) -> str:
    """'<file>:<line>: <Type>: <message>' for an exception raised while importing `path`."""
    if isinstance(e, SyntaxError) and e.filename and e.lineno:
        where = f'{e.filename}:{e.lineno}'
        if os.path.abspath(e.filename) != os.path.abspath(path):
            where = f'{path}: {where}'
        return f'{where}: {type(e).__name__}: {e.msg}'
    line = None
    deepest = None
    for frame in traceback.extract_tb(e.__traceback__):
        if os.path.abspath(frame.filename) == os.path.abspath(path):
            line = frame.lineno
        deepest = frame
    where = f'{path}:{line}' if line else path
    message = f'{where}: {_one_line(e)}'
    if deepest is not None and line is not None and os.path.abspath(deepest.filename) != os.path.abspath(path):
        message += f' (raised in {deepest.filename}:{deepest.lineno})'
    return message


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
        except Exception as e:  # noqa: BLE001 - any failure to import is the submission's
            sys.modules.pop(name, None)
            raise SubmissionError(_import_error_message(path, e)) from e
    missing = [f for f in REQUIRED if not callable(getattr(module, f, None))]
    if missing:
        raise SubmissionError(f'{path}: missing required function(s): {", ".join(missing)}.')
    fns = {f: getattr(module, f, None) for f in REQUIRED + OPTIONAL}
    return Submission(path=path, module=module, **fns)
