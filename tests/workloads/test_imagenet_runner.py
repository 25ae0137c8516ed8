"""ImageNet workloads on a generated JPEG folder: baseline steps through `algoperf run`, and the eval."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from algoperf import cli, registry
from algoperf.runtime import Runtime
from workloads.imagenet_resnet import input_pipeline as ip
from workloads.imagenet_resnet import loaders
from workloads.imagenet_resnet.fixture import write_imagenet_fixture

SUBMISSION = 'tests/data/submissions/tiny_batch_nadamw.py'  # Batch 2: a 224 x 224 step on CPU.


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp('imagenet_run')
    write_imagenet_fixture(str(root), seed=4, num_classes=3, train_per_class=4, val_per_class=3)
    return root


@pytest.mark.parametrize('workload', ['imagenet_resnet', 'imagenet_vit'])
def test_baseline_trains_on_the_jpeg_fixture_through_the_runner(data_dir, tmp_path, workload):
    # Evals skipped: the fixed eval batch (1,024 images of 224 x 224) is a GPU-sized forward.
    code = cli.main([
        'run', f'--workload={workload}', f'--submission_path={SUBMISSION}', '--tuning_ruleset=self',
        f'--data_dir={data_dir}', f'--experiment_dir={tmp_path}', '--experiment_name=inet', '--noprogress',
        '--max_global_steps=2', '--skip_evals=true', '--save_checkpoints=false', '--rng_seed=3',
        '--torch_compile=false',
    ])  # fmt: skip
    assert code == 0
    trial = tmp_path / 'inet' / f'{workload}_pytorch' / 'trial_1'
    assert json.loads((trial / 'result.json').read_text())['status'] == 'max_global_steps'
    losses = pd.read_csv(trial / 'measurements.csv')['loss'].dropna().astype(float)
    assert len(losses) == 2 and np.isfinite(losses).all()


@pytest.mark.parametrize('backend', [
    pytest.param('dali', marks=pytest.mark.skipif(not loaders.dali_available(), reason='no DALI')), 'pil'])  # fmt: skip
def test_eval_reads_the_split_in_order_with_padding_masked(data_dir, backend):
    wl = registry.get_workload('imagenet_resnet', runtime=Runtime(torch.device('cpu')))
    wl.data_backend = backend
    wl._eval_num_workers = 0
    model, state = wl.init_model_fn([0, 0])
    result = wl._eval_model_on_split('validation', 9, 4, model, state, [1, 2], str(data_dir))
    images = ip.split_images('validation', str(data_dir))
    from workloads.imagenet_resnet.loaders import dali_batches, pil_batches

    plan = iter([(0, np.arange(i, min(i + 4, 9))) for i in range(0, 9, 4)])
    batches = (dali_batches(images, plan, 4, False, 0) if backend == 'dali'
               else pil_batches(images, plan, False, 0, num_workers=0))  # fmt: skip
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in batches])
    labels = torch.from_numpy(images.labels)
    loss = torch.nn.functional.cross_entropy(logits.double(), labels).item()
    assert result['loss'] == pytest.approx(loss, rel=1e-4)
    assert result['accuracy'] == pytest.approx((logits.argmax(1) == labels).double().mean().item())
