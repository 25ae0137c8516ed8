"""Experiment directories, JSON artifacts and metric logging (upstream layout).

    <experiment_dir>/<experiment_name>/<workload>_pytorch/trial_<k>/
        hparams.json  meta_data_<n>.json  flags_<n>.json
        measurements.csv  eval_measurements.csv  checkpoint_<step>

Only rank 0 writes. JSON files are written atomically (temp + rename).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import platform
import subprocess
from typing import Any, Dict, Optional

from algoperf import spec
from algoperf.config import ConfigError
from algoperf.csv_log import CsvLog

_log = logging.getLogger(__name__)


def write_json(name: str, log_dict: Dict, indent: int = 2, is_main: bool = True) -> None:
    """Write `log_dict` as JSON (upstream: json.dumps with indent 2)."""
    if not is_main:
        return
    text = json.dumps(log_dict, indent=indent)  # Before opening: a TypeError leaves no file.
    tmp = f'{name}.tmp.{os.getpid()}'
    try:
        with open(tmp, 'w') as f:
            f.write(text)
        os.replace(tmp, name)
    except BaseException:
        # ENOSPC, EROFS, a signal: no half-written temp file stays behind.
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def write_hparams(hparams: spec.Hyperparameters, tuning_dir: str, is_main: bool = True) -> spec.Hyperparameters:
    """Save hparams.json, or re-read it if present (upstream: resumes keep hparams)."""
    path = os.path.join(tuning_dir, 'hparams.json')
    if os.path.exists(path):
        _log.info('Loading hparams from %s.', path)
        try:
            with open(path) as f:
                hparams_dict = json.load(f)
            return collections.namedtuple('Hyperparameters', hparams_dict)(**hparams_dict)
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as e:
            raise ConfigError(f'{path}: corrupt hyperparameters ({e}); fix or delete it to resume.') from None
    _log.info('Saving hparams to %s.', path)
    write_json(path, hparams._asdict(), is_main=is_main)
    return hparams


def _is_primitive(item: Any) -> bool:
    return isinstance(item, (float, int, str, bool))


def _workload_properties(workload: spec.Workload) -> Dict[str, Any]:
    props = {}
    for key in dir(workload):
        if key.startswith('_') or key in ('param_shapes', 'model_params_types'):
            continue
        try:
            value = getattr(workload, key)
        except Exception:  # Upstream skips properties that raise.
            continue
        if _is_primitive(value):
            props[f'workload.{key}'] = value
    return props


def _utilization() -> Dict[str, Any]:
    import psutil

    util = {
        'cpu.util.avg_percent_since_last': psutil.cpu_percent(interval=None),
    }
    freq = psutil.cpu_freq()
    if freq is not None:
        util['cpu.freq.current'] = freq.current
    mem = psutil.virtual_memory()
    util.update({
        'mem.total': mem.total,
        'mem.available': mem.available,
        'mem.used': mem.used,
        'mem.percent_used': mem.percent,
    })
    disk = psutil.disk_io_counters()
    if disk is not None:
        util['mem.read_bytes_since_boot'] = disk.read_bytes
        util['mem.write_bytes_since_boot'] = disk.write_bytes
    net = psutil.net_io_counters()
    if net is not None:
        util['net.bytes_sent_since_boot'] = net.bytes_sent
        util['net.bytes_recv_since_boot'] = net.bytes_recv
    return util


def _gpu_info() -> Dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {}
    info: Dict[str, Any] = {'gpu.count': torch.cuda.device_count()}
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        # Upstream (GPUtil) reports MiB.
        info[f'gpu.{i}.mem.total'] = total / 2**20
        info[f'gpu.{i}.mem.used'] = (total - free) / 2**20
        info[f'gpu.{i}.mem.free'] = free / 2**20
        info[f'gpu.{i}.mem.util'] = (total - free) / total
    info['gpu_model_name'] = torch.cuda.get_device_name(0)
    info['gpu_count'] = torch.cuda.device_count()
    info['gpu_driver'] = f'cuda {torch.version.cuda}'
    return info


def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(['git', *args], capture_output=True, text=True, timeout=5, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_model_name() -> Optional[str]:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def get_meta_data(workload: spec.Workload, rng_seed: Optional[int] = None, **extra: Any) -> Dict[str, Any]:
    """The meta_data_<n>.json content: workload properties and the machine."""
    import psutil
    import torch

    meta = _workload_properties(workload)
    meta.update(_utilization())
    meta['os_platform'] = platform.platform()
    meta['python_version'] = platform.python_version()
    meta['python_compiler'] = platform.python_compiler()
    meta['torch_version'] = torch.__version__
    for key, args in (('git_branch', ('rev-parse', '--abbrev-ref', 'HEAD')), ('git_commit_hash', ('rev-parse', 'HEAD'))):
        value = _git(*args)
        if value:
            meta[key] = value
    cpu_name = _cpu_model_name()
    if cpu_name:
        meta['cpu_model_name'] = cpu_name
    meta['cpu_count'] = psutil.cpu_count()
    meta.update(_gpu_info())
    if rng_seed is not None:
        meta['rng_seed'] = rng_seed
    meta.update(extra)
    return meta


def _is_tensor(value: Any) -> bool:
    return hasattr(value, 'device') and hasattr(value, 'item')


class MetricLogger:
    """Appends metric rows to measurements.csv (and eval rows to eval_measurements.csv).

    Exists on every rank so that submissions' `workload.metrics_logger` calls
    work everywhere; only rank 0 writes. A row whose values include tensors is
    queued as is and read (`.item()`) at the next flush, which the runner does
    in the eval/logging block, off the clock: logging a device loss then costs
    no host sync inside the step. Queued rows are lost if the process dies.
    """

    def __init__(self, csv_path: str, eval_csv_path: str, is_main: bool = True) -> None:
        self._is_main = is_main
        self._pending = []
        # Experiment trackers (algoperf/tracking.py) get every written row at the next flush:
        # rows a submission logs inside update_params reach TensorBoard/W&B off the clock.
        self.trackers = []
        self._tracked = []
        self.csv = CsvLog(csv_path)
        self.eval_csv = CsvLog(eval_csv_path, durable=True)

    def append_scalar_metrics(
        self,
        metrics: Dict,
        global_step: int,
        preemption_count: Optional[int] = None,
        is_eval: bool = False,
    ) -> None:
        """Log one row. Like upstream, adds global_step/preemption_count to `metrics`."""
        metrics['global_step'] = global_step
        if preemption_count is not None:
            metrics['preemption_count'] = preemption_count
        if not self._is_main:
            return
        if not is_eval and any(_is_tensor(v) for v in metrics.values()):
            self._pending.append(dict(metrics))
            return
        self._write_pending()
        self.csv.append(metrics)
        if self.trackers:
            self._tracked.append(dict(metrics))
        if is_eval:
            self.eval_csv.append(metrics)
            self._flush_trackers()

    def flush(self) -> None:
        """Write queued rows, reading their tensors, and feed the trackers (call off the clock)."""
        self._write_pending()
        self._flush_trackers()

    def _write_pending(self) -> None:
        pending, self._pending = self._pending, []
        for row in pending:
            row = {k: (v.item() if _is_tensor(v) else v) for k, v in row.items()}
            self.csv.append(row)
            if self.trackers:
                self._tracked.append(row)

    def _flush_trackers(self) -> None:
        rows, self._tracked = self._tracked, []
        for row in rows:
            for tracker in self.trackers:
                tracker.log_row(row)

    def finish(self) -> None:
        self.flush()
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []


def set_up_loggers(train_dir: str, is_main: bool = True) -> MetricLogger:
    """The trial's MetricLogger (upstream name; no TensorBoard/wandb here)."""
    return MetricLogger(
        os.path.join(train_dir, 'measurements.csv'),
        os.path.join(train_dir, 'eval_measurements.csv'),
        is_main=is_main,
    )
