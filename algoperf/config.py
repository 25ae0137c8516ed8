"""`RunConfig`: every `algoperf run` setting, typed and validated once.

Field names are upstream's `submission_runner.py` flag names (spec §5.1), so
`--flag=value` lines from upstream docs, scripts and `flags_<n>.json` work
unchanged; a few fields of our own follow them. Validation happens before
anything is written, and each error names the flag.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional

from algoperf.errors import UserError


class ConfigError(UserError):
    """A bad flag value or combination; the message names the flag(s)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Settings of one `algoperf run` invocation (one workload, 1..n trials)."""

    # Upstream flags, same names and defaults (except where noted).
    submission_path: Optional[str] = None
    workload: Optional[str] = None
    framework: str = 'pytorch'  # Upstream: required; only 'pytorch' is supported here.
    experiment_dir: Optional[str] = None
    experiment_name: Optional[str] = None
    tuning_ruleset: str = 'external'
    tuning_search_space: Optional[str] = None
    num_tuning_trials: int = 1
    data_dir: str = '~/data'
    imagenet_v2_data_dir: Optional[str] = None
    librispeech_tokenizer_vocab_path: str = ''
    torch_compile: bool = True
    save_checkpoints: bool = True
    save_intermediate_checkpoints: bool = True
    resume_last_run: Optional[bool] = None
    append_timestamp: bool = False
    use_wandb: bool = False
    profile: bool = False
    max_global_steps: Optional[int] = None
    overwrite: bool = False
    hparam_start_index: Optional[int] = None
    hparam_end_index: Optional[int] = None
    rng_seed: Optional[int] = None
    set_pytorch_max_split_size: bool = False
    pytorch_eval_num_workers: int = 0
    capture_jax_trace: bool = False
    skip_evals: bool = False
    # Ours.
    halt_on_divergence: bool = True  # False keeps upstream's train-on after NaN evals.
    device: str = 'auto'  # 'auto' | 'cpu' | 'cuda'
    progress: bool = True  # progress bar / lines on stderr
    # Only the trial summary lines, the end-of-run table, warnings and errors on the terminal.
    quiet: bool = False
    # Torch intra-op threads per rank; 0 = auto (runtime.choose_num_threads).
    num_threads: int = 0
    # Resume even when --submission_path, --rng_seed or the search space differ from
    # what the experiment directory recorded (flags_0.json, hparams.json).
    resume_anyway: bool = False
    # The benchmark's rules (algoperf/benchmark_versions.py): budgets, eval periods, the
    # self-tuning budget factor and TF32 on CUDA. 0.6 / 0.5 reproduce old experiments.
    benchmark_version: str = '1.0'
    # TensorBoard event files per trial: None = on when the package is installed.
    use_tensorboard: Optional[bool] = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the flag of the first problem found."""
        if self.framework == 'jax':
            raise ConfigError(
                '--framework=jax: this implementation is PyTorch-only; use --framework=pytorch '
                '(JAX submissions need upstream algorithmic-efficiency).'
            )
        if self.framework != 'pytorch':
            raise ConfigError(f"--framework={self.framework}: must be 'pytorch'.")
        if not self.submission_path:
            raise ConfigError('--submission_path is required (path to the submission .py file).')
        if not self.workload:
            raise ConfigError('--workload is required (see `algoperf list`).')
        if not self.experiment_dir:
            raise ConfigError('--experiment_dir is required (root directory for logs).')
        if self.tuning_ruleset not in ('external', 'self'):
            raise ConfigError(f"--tuning_ruleset={self.tuning_ruleset}: must be 'external' or 'self'.")
        if self.tuning_ruleset == 'self' and self.tuning_search_space:
            raise ConfigError(
                '--tuning_search_space must not be given with --tuning_ruleset=self '
                '(self-tuning submissions get hyperparameters=None).'
            )
        if self.tuning_ruleset == 'external' and not self.tuning_search_space:
            raise ConfigError('--tuning_ruleset=external needs --tuning_search_space=<file.json>.')
        if self.num_tuning_trials < 1:
            raise ConfigError(f'--num_tuning_trials={self.num_tuning_trials}: must be >= 1.')
        if self.max_global_steps is not None and self.max_global_steps < 1:
            raise ConfigError(f'--max_global_steps={self.max_global_steps}: must be >= 1.')
        for flag in ('hparam_start_index', 'hparam_end_index'):
            value = getattr(self, flag)
            if value is not None and value < 0:
                raise ConfigError(f'--{flag}={value}: must be >= 0.')
        if (
            self.hparam_start_index is not None
            and self.hparam_end_index is not None
            and self.hparam_end_index <= self.hparam_start_index
        ):
            raise ConfigError('--hparam_end_index must be greater than --hparam_start_index.')
        if self.rng_seed is not None and not 0 <= self.rng_seed < 2**63:
            raise ConfigError(f'--rng_seed={self.rng_seed}: must be in [0, 2**63).')
        if self.capture_jax_trace:
            raise ConfigError('--capture_jax_trace is JAX-only; use `algoperf profile` for PyTorch traces.')
        if self.device not in ('auto', 'cpu', 'cuda'):
            raise ConfigError(f"--device={self.device}: must be 'auto', 'cpu' or 'cuda'.")
        if self.num_threads < 0:
            raise ConfigError(f'--num_threads={self.num_threads}: must be >= 0 (0 = auto).')
        if self.pytorch_eval_num_workers < 0:
            raise ConfigError('--pytorch_eval_num_workers must be >= 0.')
        if self.experiment_name is not None:
            parts = os.path.normpath(self.experiment_name).split(os.sep)
            if os.path.isabs(self.experiment_name) or '..' in parts:
                # Checked again against symlinks once the directory is resolved (experiment.py).
                raise ConfigError(
                    f'--experiment_name={self.experiment_name}: must be a relative path inside '
                    '--experiment_dir (no leading "/", no "..").'
                )
        from algoperf import benchmark_versions  # noqa: PLC0415 (torch-free table)

        object.__setattr__(self, 'benchmark_version', benchmark_versions.get(self.benchmark_version).name)
        if self.overwrite and self.resume_last_run:
            raise ConfigError('--overwrite and --resume_last_run contradict each other; pick one.')

    @property
    def is_self_tuning(self) -> bool:
        return self.tuning_ruleset == 'self'

    def as_flags(self) -> Dict[str, Any]:
        """Flag name -> value, as written to flags_<n>.json."""
        return dataclasses.asdict(self)

    @classmethod
    def field_types(cls) -> Dict[str, str]:
        """Flag name -> 'bool' | 'int' | 'str' (for the CLI parser)."""
        out = {}
        for f in dataclasses.fields(cls):
            t = str(f.type)
            out[f.name] = 'bool' if 'bool' in t else 'int' if 'int' in t else 'str'
        return out
