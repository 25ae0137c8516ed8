"""scripts/gpu_check.sh --dry-run: the prepared GPU check still runs end to end (CPU, tiny sizes).

Every suite of benchmarks/gpu/run_suites.py must produce rows without an error; the
numbers are not looked at (a CPU smoke run's timings mean nothing). ~40 s on 2 cores.
"""

import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'scripts', 'gpu_check.sh')


def test_dry_run_writes_json_and_markdown_for_every_suite(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    result = subprocess.run(
        [SCRIPT, '--dry-run', str(tmp_path)], capture_output=True, text=True, env=env, timeout=300
    )
    log = (tmp_path / 'suites.log').read_text() if (tmp_path / 'suites.log').exists() else ''
    assert result.returncode == 0, result.stdout + result.stderr + log
    data = json.loads((tmp_path / 'results.json').read_text())
    assert data['dry_run'] is True
    suites = {r['suite'] for r in data['rows']}
    assert suites == {'copy_bandwidth', 'fused_updates', 'cuda_graph', 'shampoo_roots',
                      'embedding', 'lm_loss_head', 'lm_train_step'}  # fmt: skip
    errors = [r for r in data['rows'] if r.get('error')]
    assert not errors, errors
    timed = [r for r in data['rows'] if isinstance(r.get('ms'), float)]
    assert all(r['ms'] > 0 for r in timed) and len(timed) >= 10
    table = (tmp_path / 'results.md').read_text()
    assert '| suite |' in table and 'dry run' in table
    assert len(os.listdir(tmp_path)) <= 8  # what the lent machine returns from $OUT


def test_unknown_flag_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run([SCRIPT, '--fast', str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count('\n') == 0 and '--fast' in result.stderr


def test_suite_runner_refuses_a_real_run_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    result = subprocess.run(
        ['python3', os.path.join(ROOT, 'benchmarks', 'gpu', 'run_suites.py'), '--out',
         str(tmp_path)], capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2 and 'no CUDA device' in result.stderr
