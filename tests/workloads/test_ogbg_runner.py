"""ogbg on a converted OGB-layout fixture: training steps through `algoperf run`, and the eval."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from algoperf import cli, registry
from algoperf.runtime import Runtime
from workloads.ogbg import input_pipeline as ip
from workloads.ogbg import metrics, models
from workloads.ogbg import reference_reader as ref
from workloads.ogbg.fixture import write_ogbg_fixture

SUBMISSION = 'tests/data/submissions/small_batch_nadamw.py'  # Batch 64 graphs.


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp('ogbg_run')
    write_ogbg_fixture(str(root / 'raw'), seed=11, num_graphs=400)
    assert (
        cli.main(['data', 'ogbg', f'--raw_dir={root / "raw"}', f'--data_dir={root / "data"}']) == 0
    )
    return root / 'data'


def test_baseline_trains_on_the_converted_fixture_through_the_runner(data_dir, tmp_path):
    # Evals are skipped: the fixed eval batch (32,768 average graphs: 852k nodes, 1.8M
    # edges) is a GPU-sized forward; the eval path is tested below at a small batch.
    code = cli.main([
        'run', '--workload=ogbg', f'--submission_path={SUBMISSION}', '--tuning_ruleset=self',
        f'--data_dir={data_dir}', f'--experiment_dir={tmp_path}', '--experiment_name=ogbg', '--noprogress',
        '--max_global_steps=6', '--skip_evals=true', '--save_checkpoints=false', '--rng_seed=2',
        '--torch_compile=false',
    ])  # fmt: skip
    assert code == 0
    trial = tmp_path / 'ogbg' / 'ogbg_pytorch' / 'trial_1'
    assert json.loads((trial / 'result.json').read_text())['status'] == 'max_global_steps'
    losses = pd.read_csv(trial / 'measurements.csv')['loss'].dropna().astype(float)
    assert len(losses) == 6 and np.isfinite(losses).all() and (losses > 0).all()


def test_eval_on_real_batches_reads_the_split_once_and_matches_the_reference(data_dir):
    wl = registry.get_workload('ogbg', runtime=Runtime(torch.device('cpu')))
    wl._build_model = lambda: models.GNN(
        latent_dim=32, hidden_dims=(32,), num_message_passing_steps=2
    )
    model, _ = wl.init_model_fn([0, 0])
    split = ip.load_split(str(data_dir), 'validation')
    n = 16
    result = wl._eval_model_on_split(
        'validation', len(split), n, model, None, [3, 3], str(data_dir)
    )
    assert wl._eval_iters['validation'].batches_per_pass > 1
    again = wl._eval_model_on_split('validation', len(split), n, model, None, [3, 3], str(data_dir))
    assert again == result  # The next eval reads the same pass, not a shifted one.

    batches = list(ref.dynamically_batch((ref.to_graph(split, i) for i in range(len(split))), n))
    model.eval()
    logits, labels, mask = [], [], []
    with torch.no_grad():
        for b in batches:
            graph = models.GraphsTuple(*(torch.from_numpy(b[k]) if k else None for k in (
                'nodes', 'edges', 'receivers', 'senders', None, 'n_node', 'n_edge')))  # fmt: skip
            logits.append(model(graph))
            labels.append(torch.from_numpy(b['targets']))
            mask.append(torch.from_numpy(b['weights']))
    logits, labels, mask = torch.cat(logits), torch.cat(labels), torch.cat(mask)
    losses = F.binary_cross_entropy_with_logits(logits, labels, reduction='none')
    assert result['loss'] == pytest.approx(losses[mask].mean().item(), rel=1e-5)
    assert result['accuracy'] == pytest.approx(
        ((logits > 0) == (labels > 0))[mask].float().mean().item()
    )
    expected = metrics.mean_average_precision(labels.numpy(), logits.numpy(), mask.numpy())
    assert result['mean_average_precision'] == pytest.approx(expected, rel=1e-6)
