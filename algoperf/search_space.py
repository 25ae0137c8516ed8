"""Tuning search-space JSON: validation at the boundary, then trial points.

Two upstream formats (spec §2.1):
  * dict  {name: {"feasible_points": [...]}} or {name: {"min", "max", "scaling"}}
    -> Halton-sampled points (seeded, see halton.py);
  * list  [{name: value, ...}, ...] -> fixed points used in file order,
    `num_tuning_trials` clipped to the list length.
Every error names the file and the key.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
from typing import Any, Dict, List, Tuple, Union

from algoperf import halton

_log = logging.getLogger(__name__)


class SearchSpaceError(ValueError):
    """A malformed tuning search space; the message names file and key."""


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A validated search space.

    Attributes:
      path: the JSON file it came from.
      names: hyperparameter names, in file order.
      dims: for dict spaces, name -> validated dimension spec.
      points: for list spaces, the fixed points in file order.
    """

    path: str
    names: Tuple[str, ...]
    dims: Dict[str, dict] | None = None
    points: Tuple[Dict[str, Any], ...] | None = None

    @property
    def is_fixed_list(self) -> bool:
        return self.points is not None

    def generate(self, num_trials: int, seed: int) -> List[Any]:
        """`num_trials` Hyperparameters namedtuples (fewer for short lists)."""
        cls = collections.namedtuple('Hyperparameters', self.names)
        if self.points is not None:
            n = min(num_trials, len(self.points))
            if n != num_trials:
                _log.info(
                    '--num_tuning_trials=%d but %s lists %d point(s); running %d trial(s).',
                    num_trials, self.path, len(self.points), n,
                )
            return [cls(**p) for p in self.points[:n]]
        sequence = halton.generate_sequence(num_trials, len(self.names), seed=seed)
        return [
            cls(**{n: halton.scale_point(p[i], self.dims[n]) for i, n in enumerate(self.names)})
            for p in sequence
        ]


def load(path: str) -> SearchSpace:
    """Read and validate a search-space JSON file."""
    if not os.path.isfile(path):
        raise SearchSpaceError(f'{path}: tuning search space file not found.')
    try:
        with open(path) as f:
            raw = json.load(f)
    except json.JSONDecodeError as e:
        raise SearchSpaceError(f'{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}.') from e
    return parse(raw, path)


def parse(raw: Union[dict, list], path: str = '<search space>') -> SearchSpace:
    """Validate an already-decoded search space."""
    if isinstance(raw, dict):
        if not raw:
            raise SearchSpaceError(f'{path}: the search space is empty.')
        dims = {name: _check_dim(path, name, space) for name, space in raw.items()}
        return SearchSpace(path, tuple(raw), dims=dims)
    if isinstance(raw, list):
        if not raw:
            raise SearchSpaceError(f'{path}: the list of hyperparameter points is empty.')
        names = None
        for i, point in enumerate(raw):
            if not isinstance(point, dict):
                raise SearchSpaceError(f'{path}: point [{i}] must be an object of name: value.')
            for name in point:
                _check_name(path, name)
            if names is None:
                names = tuple(point)
            elif set(point) != set(names):
                diff = sorted(set(point) ^ set(names))
                raise SearchSpaceError(
                    f'{path}: point [{i}] has different keys than point [0] (differs in: {", ".join(diff)}).'
                )
        return SearchSpace(path, names, points=tuple(dict(p) for p in raw))
    raise SearchSpaceError(f'{path}: top level must be an object (ranges) or a list (fixed points).')


def _check_name(path: str, name: str) -> None:
    if not isinstance(name, str) or not name.isidentifier() or name.startswith('_'):
        raise SearchSpaceError(
            f'{path}: key {name!r} is not a valid hyperparameter name (a Python identifier not starting with _).'
        )


def _check_dim(path: str, name: str, space: Any) -> dict:
    _check_name(path, name)
    where = f'{path}: key {name!r}'
    if not isinstance(space, dict):
        raise SearchSpaceError(f'{where}: expected an object with "feasible_points" or "min"/"max"/"scaling".')
    if 'feasible_points' in space:
        points = space['feasible_points']
        if not isinstance(points, list) or not points:
            raise SearchSpaceError(f'{where}: "feasible_points" must be a non-empty list.')
        extra = sorted(set(space) - {'feasible_points'})
        if extra:
            raise SearchSpaceError(f'{where}: unexpected field(s) {extra} next to "feasible_points".')
        return {'feasible_points': points}
    missing = [k for k in ('min', 'max', 'scaling') if k not in space]
    if missing:
        raise SearchSpaceError(f'{where}: missing field(s) {missing} (or give "feasible_points").')
    lo, hi, scaling = space['min'], space['max'], space['scaling']
    for field, value in (('min', lo), ('max', hi)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SearchSpaceError(f'{where}: "{field}" must be a finite number, got {value!r}.')
    if scaling not in ('log', 'linear'):
        raise SearchSpaceError(f'{where}: "scaling" must be "log" or "linear", got {scaling!r}.')
    if lo > hi:
        raise SearchSpaceError(f'{where}: "min" ({lo}) is greater than "max" ({hi}).')
    if scaling == 'log' and lo <= 0:
        raise SearchSpaceError(f'{where}: log scaling needs "min" > 0, got {lo}.')
    return {'min': lo, 'max': hi, 'scaling': scaling}
