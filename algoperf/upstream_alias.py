"""Upstream's old package name, `algorithmic_efficiency`, resolved to this project's modules.

Before v0.6 upstream's package was `algorithmic_efficiency`; every v0.5 leaderboard submission
imports it (`from algorithmic_efficiency import spec`, `...pytorch_utils import pytorch_setup`,
`import algorithmic_efficiency.random_utils as prng`). v0.6 submissions use `algoperf`, which is
this package's name too, except for `algoperf.workloads.*`, which here lives in the top-level
`workloads` package. This finder maps both:

    algorithmic_efficiency                -> the `algorithmic_efficiency` shim package
    algorithmic_efficiency.<m>            -> algoperf.<m>            (spec, pytorch_utils, ...)
    {algorithmic_efficiency,algoperf}.workloads.workloads -> algoperf.registry (BASE_WORKLOADS, ...)
    {algorithmic_efficiency,algoperf}.workloads.<w>[.<w>_pytorch].<m> -> workloads.<w>.<m>

An alias is the *same module object* as its target (so `spec.TrainingCompleteError` raised by an
old-style submission is the class the runner catches). A name with no counterpart raises
ModuleNotFoundError naming the old and the new name.

Installing the finder (`install()`) is the one import-system side effect of this project, made by
`algoperf.submission.load` before it runs a submission and by `import algorithmic_efficiency`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from typing import Optional

OLD = 'algorithmic_efficiency'
# Upstream modules with no counterpart here (JAX/TF interop); named in the error.
_NO_COUNTERPART = {'interop_utils': 'JAX interop (no JAX here)'}


def _upstream_workload_target(parts: list) -> Optional[str]:
    """Our module for upstream's `workloads.<...>` path parts (after 'workloads')."""
    if not parts:
        return 'workloads'
    if parts == ['workloads']:
        return 'algoperf.registry'
    # Upstream: workloads/<name>/<name>_pytorch/<module>.py; framework-free base in
    # workloads/<name>/workload.py. Ours: workloads/<name>/<module>.py for both.
    kept = [p for p in parts if not p.endswith('_pytorch')]
    if any(p.endswith('_jax') for p in kept):
        return None
    return '.'.join(['workloads'] + kept)


def target_of(fullname: str) -> Optional[str]:
    """The module `fullname` (an upstream dotted name) resolves to, or None."""
    parts = fullname.split('.')
    if parts[0] not in (OLD, 'algoperf') or len(parts) < 2:
        return None
    if parts[1] == 'workloads':
        return _upstream_workload_target(parts[2:])
    if parts[0] == 'algoperf':
        return None  # A real algoperf module: the normal import system finds it.
    if parts[1] in _NO_COUNTERPART:
        return None
    return '.'.join(['algoperf'] + parts[1:])


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self._real_spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        # Already executed under its real name. The import system has just set the alias's
        # spec on it; put the real one back so pickling and reload see the real module.
        module.__spec__ = self._real_spec


class UpstreamAliasFinder(importlib.abc.MetaPathFinder):
    """Meta-path finder for `algorithmic_efficiency.*` and `algoperf.workloads.*`."""

    def find_spec(self, fullname, path=None, target=None):
        parts = fullname.split('.')
        if parts[0] == OLD and len(parts) == 1:
            return None  # The real shim package on disk.
        if parts[0] not in (OLD, 'algoperf') or len(parts) < 2:
            return None
        if parts[0] == 'algoperf' and parts[1] != 'workloads':
            return None
        dest = target_of(fullname)
        if dest is None:
            why = _NO_COUNTERPART.get(parts[1], 'JAX workload code') if parts[0] == OLD else 'JAX workload code'
            raise ModuleNotFoundError(
                f'No module named {fullname!r}: upstream module with no counterpart in algoperf-fast ({why}).',
                name=fullname,
            )
        try:
            found = importlib.util.find_spec(dest)
        except ModuleNotFoundError:
            found = None
        if found is None:
            raise ModuleNotFoundError(
                f'No module named {fullname!r} (upstream name; algoperf-fast has no {dest!r}).', name=fullname
            )
        is_pkg = found.submodule_search_locations is not None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(dest), is_package=is_pkg)


_FINDER = UpstreamAliasFinder()


def install() -> None:
    """Put the alias finder first on sys.meta_path (idempotent).

    First, because an alias package's `__path__` is its target's directory: the standard
    PathFinder would otherwise load `algoperf.workloads.ogbg.metrics` from there a second time,
    as a distinct module with distinct classes.
    """
    if not any(isinstance(f, UpstreamAliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _FINDER)
