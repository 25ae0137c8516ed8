"""Issue 16 item 2 and issue 18 case 4 (oversized batch): upstream submissions run on digits
(asked for mnist, which digits stands in for); get_batch_size errors are one line; a train
batch larger than the dataset is drawn across epochs and terminates."""

import json
import subprocess
import sys

import numpy as np
import torch

from algoperf import cli, registry
from workloads.in_memory_classification import _TrainStream

# An upstream-style table: knows upstream's workloads, not our dev 'digits'.
UPSTREAM_TABLE = '''
from submissions.baselines.nadamw.submission import (  # noqa: F401
    data_selection, init_optimizer_state, prepare_for_eval, update_params)


def get_batch_size(workload_name):
    {body}
'''


def _run(tmp_path, capsys, body):
    sub = tmp_path / 'upstream_table.py'
    sub.write_text(UPSTREAM_TABLE.format(body=body))
    code = cli.main(['run', '--workload=digits', f'--submission_path={sub}', '--tuning_ruleset=self',
                     f'--experiment_dir={tmp_path / "exp"}', '--experiment_name=x', '--noprogress',
                     '--max_global_steps=2', '--rng_seed=0', '--save_checkpoints=false'])
    return code, capsys.readouterr().err, sub


def test_digits_asks_for_mnist_when_the_table_lacks_it(tmp_path, capsys):
    assert registry.get_spec('digits').stands_in_for == 'mnist'
    code, err, sub = _run(tmp_path, capsys, "return {'mnist': 16, 'wmt': 128}[workload_name]")
    assert code == 0, err
    r = json.loads((tmp_path / 'exp' / 'x' / 'digits_pytorch' / 'trial_1' / 'result.json').read_text())
    assert r['global_batch_size'] == 16 and r['batch_size_asked_as'] == 'mnist'
    assert "batch size 16 from get_batch_size('mnist')" in err  # The trial summary line.
    logged = [line for line in err.splitlines() if "using get_batch_size('mnist')" in line]
    assert len(logged) == 1 and "KeyError: 'digits'" in logged[0]


def test_get_batch_size_raising_for_every_name_is_one_line(tmp_path, capsys):
    code, err, sub = _run(tmp_path, capsys, "raise ValueError(f'Unsupported workload name: {workload_name}.')")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert str(sub) in err and "workload 'digits'" in err
    assert "get_batch_size('digits') raised ValueError: Unsupported workload name: digits." in err
    assert "get_batch_size('mnist') raised ValueError" in err
    assert not (tmp_path / 'exp').exists()


def _stream(n, batch, seed=3):
    x = torch.arange(n, dtype=torch.float32)[:, None]
    y = torch.arange(n)
    return _TrainStream(x, y, seed, batch, slice(0, batch))


def test_batch_larger_than_dataset_spans_epochs_correctly():
    n, batch = 7, 17  # 2 3/7 epochs per batch
    stream = _stream(n, batch)
    drawn = np.concatenate([next(stream)['targets'].numpy() for _ in range(7)])  # 119 = 17 epochs exactly
    epochs = drawn.reshape(-1, n)
    assert (np.sort(epochs, axis=1) == np.arange(n)).all()  # Every epoch is a permutation.
    # Same order as drawing one permutation per epoch from the seed (what fast_forward relies on).
    rng = np.random.RandomState(3)
    np.testing.assert_array_equal(drawn, np.concatenate([rng.permutation(n) for _ in range(17)]))
    resumed = _stream(n, batch)
    resumed.fast_forward(3)
    np.testing.assert_array_equal(next(resumed)['targets'].numpy(), drawn[3 * batch:4 * batch])


def test_huge_batch_over_tiny_dataset_terminates():
    # Appending one epoch at a time copied the buffer per epoch: 1e6 copies of up to 3e6 indices.
    code = ('import torch; from workloads.in_memory_classification import _TrainStream\n'
            's = _TrainStream(torch.zeros(3, 1), torch.arange(3), 0, 3_000_000, slice(0, 8))\n'
            'print(next(s)["targets"].shape[0])')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == '8', out.stderr[-1000:]
