"""Checkpoints with upstream's keys, saved atomically, loaded weights-only.

Keys (spec §5.7): model_params (state_dict of the unwrapped module),
optimizer_state (per-key state_dict()), model_state, train_state,
eval_results (tuple), global_step, preemption_count. Files are
`<trial_dir>/checkpoint_<global_step>`; the latest one is resumed.

Security: a checkpoint is loaded with `weights_only=True`, always. Unpickling
anything else would run code from the file (a planted `checkpoint_999999`
would run on `--resume_last_run`), so a file that needs it is refused with a
CheckpointError naming it. The save side keeps that promise for our own files:
numpy values are converted to tensors / Python scalars and the written file is
re-read weights-only (memory-mapped, so tensor bytes are not read) before it
replaces the previous checkpoint.
"""

from __future__ import annotations

import collections
import errno
import glob
import io
import logging
import os
import pickle
import re
import zipfile
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from algoperf.errors import CheckpointError

_log = logging.getLogger(__name__)
_CKPT_RE = re.compile(r'checkpoint_(\d+)$')
# Temp files this package writes next to its outputs: checkpoint_12.tmp.4242,
# result.json.tmp.4242, flags_0.json.tmp.4242, measurements.csv.tmp.4242, ...
_TEMP_RE = re.compile(r'^(checkpoint_\d+|[\w.-]+\.(json|csv))\.tmp\.\d+$')
REQUIRED_KEYS = ('model_params', 'optimizer_state', 'model_state', 'train_state', 'eval_results', 'global_step',
                 'preemption_count')


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


def remove_temp_files(directory: str) -> List[str]:
    """Delete temp files a killed or failed save left in `directory`; returns their names."""
    removed = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        if _TEMP_RE.match(name):
            try:
                os.remove(os.path.join(directory, name))
                removed.append(name)
            except FileNotFoundError:
                pass
    if removed:
        _log.info('Removed %d temp file(s) left by an earlier run in %s: %s.', len(removed), directory,
                  ', '.join(sorted(removed)))
    return removed


def to_weights_only(value: Any) -> Any:
    """`value` with numpy arrays/scalars turned into tensors/Python scalars, containers kept.

    What a weights-only load accepts: tensors, Python scalars, str, bytes, None, and
    dict / list / tuple of them (plus a few torch types such as dtype and Size).
    """
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        converted = {k: to_weights_only(v) for k, v in value.items()}
        # OrderedDict loads weights-only; other subclasses (defaultdict: its factory) do not.
        return collections.OrderedDict(converted) if type(value) is collections.OrderedDict else converted
    if isinstance(value, tuple) and not hasattr(value, '_fields'):
        return tuple(to_weights_only(v) for v in value)
    if isinstance(value, tuple):  # namedtuple: weights-only loads refuse its class
        return {k: to_weights_only(v) for k, v in value._asdict().items()}
    if isinstance(value, list):
        return [to_weights_only(v) for v in value]
    return value


def _refused_keys(state: Dict[str, Any]) -> List[str]:
    """Top-level keys of `state` a weights-only load refuses (diagnosis after a failed check)."""
    bad = []
    for key, value in state.items():
        buf = io.BytesIO()
        torch.save(value, buf)
        buf.seek(0)
        try:
            torch.load(buf, weights_only=True)
        except pickle.UnpicklingError:
            bad.append(key)
    return bad


def _check_loads_weights_only(path: str, state: Dict[str, Any]) -> None:
    try:
        torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        keys = _refused_keys(state)
        raise TypeError(
            f'checkpoint state {keys or "(unknown part)"} holds objects a weights-only load refuses '
            f'({str(e).splitlines()[0][:200]}); keep model_state / train_state / optimizer state to tensors, '
            'Python scalars and dicts/lists/tuples of them.'
        ) from None


# Below this many free bytes after a failed write, the failure was the disk filling up.
_FULL_DISK_BYTES = 1 << 20


def _save_reporting_os_errors(state: Dict[str, Any], path: str) -> None:
    """torch.save to `path`; a full or read-only disk raises OSError, not torch's RuntimeError.

    torch.save reports a failed write as RuntimeError('... unexpected pos 704 vs 598'),
    losing errno. Saving through a Python file object would keep it, but copies every
    storage into a bytes object on the way (+4 GB peak for Criteo's embedding), so the
    cause is read from the filesystem instead, before the partial file is removed.
    """
    try:
        torch.save(state, path)
    except RuntimeError as e:
        directory = os.path.dirname(path) or '.'
        try:
            fs = os.statvfs(directory)
        except OSError:
            raise e from None
        if fs.f_bavail * fs.f_frsize < _FULL_DISK_BYTES:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path) from e
        if not os.access(directory, os.W_OK):
            raise OSError(errno.EROFS if fs.f_flag & os.ST_RDONLY else errno.EACCES,
                          'cannot write the checkpoint directory', path) from e
        raise


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
        'optimizer_state': to_weights_only(opt_state),
        'model_state': to_weights_only(model_state),
        'train_state': to_weights_only(dict(train_state)),
        'eval_results': to_weights_only(tuple(eval_results)),
        'global_step': int(global_step),
        'preemption_count': int(preemption_count),
    }
    path = os.path.join(checkpoint_dir, f'checkpoint_{global_step}')
    tmp = path + f'.tmp.{os.getpid()}'
    try:
        _save_reporting_os_errors(state, tmp)
        _check_loads_weights_only(tmp, state)
        os.replace(tmp, path)
    except BaseException:
        # ENOSPC, a refused state, Ctrl-C mid-write: never leave a partial temp file
        # (Criteo's is ~8.6 GB); the previous checkpoint is untouched.
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
    if not save_intermediate_checkpoints:
        for old in glob.glob(os.path.join(checkpoint_dir, 'checkpoint_*')):
            if old != path and _CKPT_RE.search(os.path.basename(old)):
                os.remove(old)
    _log.debug('Saved checkpoint to %s.', path)  # One line per eval is the eval's own.
    return path


def load_checkpoint_file(path: str, device: torch.device) -> Dict[str, Any]:
    """torch.load with weights_only=True, always; CheckpointError naming `path` otherwise.

    Never falls back to full unpickling: that would execute code from the file.
    """
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()
        detail = next((line for line in reason if 'GLOBAL' in line or 'Unsupported' in line), reason[0] if reason else '')
        raise CheckpointError(
            f'{path}: refusing to load: it needs full unpickling, which can run code from the file '
            f'({detail.strip()[:160]}). algoperf never writes such checkpoints; move the file away to resume.'
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f'{path}: cannot read checkpoint ({type(e).__name__}: {first[:160]}).') from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'{path}: not an algoperf checkpoint (holds a {type(ckpt).__name__}, not a dict).')
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f'{path}: not an algoperf checkpoint (missing key(s) {", ".join(missing)}).')
    return ckpt


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
    try:
        unwrap_model(model_params).load_state_dict(ckpt['model_params'])
        for key, value in optimizer_state.items():
            if hasattr(value, 'load_state_dict') and key in ckpt['optimizer_state']:
                value.load_state_dict(ckpt['optimizer_state'][key])
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(
            f'{path}: does not match this model/optimizer ({type(e).__name__}: {first[:200]}).'
        ) from None
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
