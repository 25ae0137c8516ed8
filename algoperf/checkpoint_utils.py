"""Checkpoints with upstream's keys, saved atomically, loaded weights-only.

Keys (spec §5.7): model_params (state_dict of the unwrapped module),
optimizer_state (per-key state_dict()), model_state, train_state,
eval_results (tuple), global_step, preemption_count. Files are
`<trial_dir>/checkpoint_<global_step>`; the latest one is resumed.
"""

from __future__ import annotations

import glob
import logging
import os
import pickle
import re
import warnings
from typing import Any, Dict, List, Optional, Tuple

import torch

_log = logging.getLogger(__name__)
_CKPT_RE = re.compile(r'checkpoint_(\d+)$')


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP/DataParallel and torch.compile wrappers."""
    while True:
        if isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, '_orig_mod'):
            model = model._orig_mod
        else:
            return model


def latest_checkpoint(checkpoint_dir: str) -> Optional[str]:
    """Path of the checkpoint with the highest step, or None."""
    best, best_step = None, -1
    for path in glob.glob(os.path.join(checkpoint_dir, 'checkpoint_*')):
        m = _CKPT_RE.search(os.path.basename(path))
        if m and int(m.group(1)) > best_step:
            best, best_step = path, int(m.group(1))
    return best


def save_checkpoint(
    optimizer_state: Dict[str, Any],
    model_params: torch.nn.Module,
    model_state: Any,
    train_state: Dict[str, Any],
    eval_results: List[Tuple[int, Dict[str, Any]]],
    global_step: int,
    preemption_count: int,
    checkpoint_dir: str,
    save_intermediate_checkpoints: bool,
) -> str:
    """Write checkpoint_<global_step> (temp + rename); prune older ones if asked."""
    opt_state = {}
    for key, value in optimizer_state.items():
        if hasattr(value, 'state_dict'):
            opt_state[key] = value.state_dict()
        else:
            _log.warning(
                'The optimizer state for key %s is not saved, because %s has no state_dict() method.',
                key, type(value).__name__,
            )
    state = {
        'model_params': unwrap_model(model_params).state_dict(),
        'optimizer_state': opt_state,
        'model_state': model_state,
        'train_state': dict(train_state),
        'eval_results': tuple(eval_results),
        'global_step': global_step,
        'preemption_count': preemption_count,
    }
    path = os.path.join(checkpoint_dir, f'checkpoint_{global_step}')
    tmp = path + f'.tmp.{os.getpid()}'
    torch.save(state, tmp)
    os.replace(tmp, path)
    if not save_intermediate_checkpoints:
        for old in glob.glob(os.path.join(checkpoint_dir, 'checkpoint_*')):
            if old != path and _CKPT_RE.search(os.path.basename(old)):
                os.remove(old)
    _log.info('Saved checkpoint to %s.', path)
    return path


def load_checkpoint_file(path: str, device: torch.device) -> Dict[str, Any]:
    """torch.load with weights_only=True; full unpickling only if content needs it."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        warnings.warn(
            f'{path}: checkpoint holds objects beyond tensors and containers '
            f'({str(e).splitlines()[0][:200]}); loading with weights_only=False. '
            'Only resume checkpoints you wrote yourself.',
            stacklevel=2,
        )
        return torch.load(path, map_location=device, weights_only=False)


def maybe_restore_checkpoint(
    optimizer_state: Dict[str, Any],
    model_params: torch.nn.Module,
    model_state: Any,
    train_state: Dict[str, Any],
    eval_results: List,
    global_step: int,
    preemption_count: int,
    checkpoint_dir: str,
    device: torch.device,
):
    """Restore the latest checkpoint in `checkpoint_dir`, if any.

    Returns (optimizer_state, model_params, model_state, train_state,
    eval_results, global_step, preemption_count); preemption_count is the saved
    one plus one when a checkpoint was found, as upstream.
    """
    path = latest_checkpoint(checkpoint_dir)
    if path is None:
        return optimizer_state, model_params, model_state, train_state, eval_results, global_step, preemption_count
    ckpt = load_checkpoint_file(path, device)
    unwrap_model(model_params).load_state_dict(ckpt['model_params'])
    for key, value in optimizer_state.items():
        if hasattr(value, 'load_state_dict') and key in ckpt['optimizer_state']:
            value.load_state_dict(ckpt['optimizer_state'][key])
    _log.info('Loaded checkpoint from %s.', path)
    restored_train_state = dict(train_state)
    restored_train_state.update(ckpt['train_state'])
    return (
        optimizer_state,
        model_params,
        ckpt['model_state'],
        restored_train_state,
        list(ckpt['eval_results']),
        ckpt['global_step'],
        ckpt['preemption_count'] + 1,
    )
