"""The experiment directory: where it is, whether a run may continue it, and signals.

`<experiment_dir>/<experiment_name>/<workload>_pytorch` must stay inside
--experiment_dir (no "..", absolute names or symlinks out); --overwrite never
deletes through a symlink; a resume is refused, naming what changed, when the
submission, seed or search space differ from the recorded flags_0.json /
hparams.json (unless --resume_anyway). Every check here runs before anything is
written, and each error is a ConfigError naming the file or flag.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import signal
import sys
import threading
from typing import Any, Iterator, List, Optional

from algoperf.config import ConfigError, RunConfig
from algoperf.runtime import Runtime

_log = logging.getLogger(__name__)

# The flags that make a different experiment; resuming with another value is refused.
IDENTITY_FLAGS = ('submission_path', 'rng_seed', 'tuning_ruleset')


def experiment_log_dir(config: RunConfig, workload_name: str) -> str:
    """<experiment_dir>/<experiment_name>/<workload>_pytorch (upstream layout), checked to stay inside."""
    root = os.path.abspath(os.path.expanduser(config.experiment_dir))
    name = config.experiment_name
    if config.append_timestamp:
        stamp = datetime.datetime.now().strftime('-%Y-%m-%d-%H-%M-%S')
        name = (name or 'experiment') + stamp
    parts = [root] + ([name] if name else []) + [f'{workload_name}_{config.framework}']
    path = os.path.normpath(os.path.join(*parts))
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
        raise ConfigError(
            f'--experiment_name={config.experiment_name}: {path} resolves to {os.path.realpath(path)}, '
            f'outside --experiment_dir={config.experiment_dir}.'
        )
    return path


@contextlib.contextmanager
def file_errors_as_user_errors(what: str) -> Iterator[None]:
    """OSError creating/writing the experiment directory -> one line naming it (read-only, full, ...)."""
    try:
        yield
    except OSError as e:
        where = e.filename or what
        raise ConfigError(f'{where}: cannot write the experiment directory ({e.strerror or e}).') from None


def read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f'{path}: corrupt JSON ({e}); fix or delete it to resume.') from None


def ask_resume(path: str) -> bool:
    try:
        answer = input(f'Found existing experiment dir {path}. Resume training from it? [y/N]: ')
    except EOFError:  # stdin closed: no answer is "no"
        answer = ''
    return answer.strip().lower() == 'y'


def decide_resume(path: str, config: RunConfig, runtime: Runtime) -> bool:
    """True when the run continues `path`; raises ConfigError when it may not touch it."""
    if not os.path.exists(path):
        return False
    if config.resume_last_run:
        return True
    if config.overwrite:
        root = os.path.realpath(os.path.expanduser(config.experiment_dir))
        real = os.path.realpath(path)
        if os.path.islink(path) or real != os.path.join(root, os.path.relpath(path, os.path.abspath(
                os.path.expanduser(config.experiment_dir)))):
            raise ConfigError(f'--overwrite: {path} goes through a symbolic link (to {real}); not deleting it.')
        return False
    if runtime.world_size == 1 and sys.stdin is not None and sys.stdin.isatty():
        if ask_resume(path):
            return True
        raise ConfigError(f'{path} exists; not resuming. Pass --overwrite to replace it.')
    raise ConfigError(
        f'experiment directory {path} already exists: pass --resume_last_run to continue it '
        'or --overwrite to replace it.'
    )


def prepare_log_dir(path: str, config: RunConfig, runtime: Runtime, resuming: bool) -> None:
    with file_errors_as_user_errors(path):
        if os.path.exists(path) and not resuming and config.overwrite:
            _log.info('Removing existing experiment directory %s (--overwrite).', path)
            if runtime.is_main:
                shutil.rmtree(path)
        runtime.barrier()
        if runtime.is_main:
            os.makedirs(path, exist_ok=True)
        runtime.barrier()


def recorded_base_seed(log_dir: str) -> Optional[int]:
    """The base seed a previous invocation used (meta_data_0.json of any trial)."""
    for name in sorted(os.listdir(log_dir)):
        meta = os.path.join(log_dir, name, 'meta_data_0.json')
        if name.startswith('trial_') and os.path.isfile(meta):
            seed = read_json(meta).get('search_seed')
            if isinstance(seed, int):
                return seed
    return None


def resume_changes(config: RunConfig, trial_dir: str, hparams) -> List[str]:
    """What differs between this invocation and the one that started `trial_dir`."""
    changes = []
    flags_path = os.path.join(trial_dir, 'flags_0.json')
    if os.path.isfile(flags_path):
        flags = read_json(flags_path)
        for flag in IDENTITY_FLAGS:
            old, new = flags.get(flag), getattr(config, flag)
            if flag == 'submission_path' and old and new:
                same = os.path.abspath(old) == os.path.abspath(new)
            else:
                same = old == new or (flag == 'rng_seed' and new is None)  # unset: the recorded one is reused
            if not same:
                changes.append(f'--{flag} (was {old!r}, now {new!r}; {flags_path})')
    hparams_path = os.path.join(trial_dir, 'hparams.json')
    if hparams is not None and os.path.isfile(hparams_path):
        stored = read_json(hparams_path)
        current = json.loads(json.dumps(dict(hparams._asdict())))
        if stored != current:
            keys = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
            changes.append(f'the search space ({hparams_path} differs in {", ".join(keys)})')
    return changes


@contextlib.contextmanager
def stop_on_signals(flag) -> Iterator[None]:
    """SIGTERM/SIGINT set `flag` (the trial stops after its current step); a second one stops now."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        del frame
        if flag.requested:  # Second signal: do not wait for the safe point.
            raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)
        flag.signum = signum

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
