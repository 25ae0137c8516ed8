"""finewebedu_lm through `algoperf run`: the NAdamW baseline on the converted data fixture.

The fixture is `workloads/finewebedu_lm/fixture.py`'s corpus (texts and a byte-level BPE
made here) as raw parquet shards, converted by `algoperf data finewebedu_lm`. The model is
shrunk through the workload's `model_config` class attribute (the runner builds the
workload by name); the data, batch layout, loss, eval and logs are the real ones.
"""

import json
import math

import numpy as np
import pandas as pd
import pytest

from algoperf import cli
from workloads.finewebedu_lm import fixture as fx
from workloads.finewebedu_lm import input_pipeline as ip
from workloads.finewebedu_lm import models
from workloads.finewebedu_lm.workload import FineWebEduLmWorkload

pytest.importorskip('tokenizers')

# Global batch 2 (train and eval): a CPU-sized stand-in for upstream's 64 / 256.
SUBMISSION = """
from submissions.baselines.nadamw.submission import (  # noqa: F401
    data_selection, init_optimizer_state, prepare_for_eval, update_params,
)


def get_batch_size(workload_name):
    return 2


def get_eval_batch_size(workload_name):
    return 2
"""


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp('finewebedu_run')
    texts = fx.documents(seed=1)
    tokenizer = fx.train_tokenizer(texts, str(root / 'tokenizer.json'))
    fx.write_raw_shards(texts, str(root / 'raw'), 'parquet', num_shards=2)
    args = [
        'data',
        'finewebedu_lm',
        f'--raw_dir={root / "raw"}',
        f'--tokenizer={tokenizer}',
        f'--data_dir={root / "data"}',
    ]
    assert cli.main(args) == 0
    return root / 'data'


@pytest.mark.slow  # ~45 s on 2 cores: two evals of 1024-token windows on the CPU.
def test_baseline_trains_and_evaluates_on_the_converted_fixture(data_dir, tmp_path, monkeypatch):
    # The fixture tokenizer's 385 ids (format.json's vocab_size is the GPT-2 bound 50,257).
    vocab = json.loads((data_dir / ip.DATASET_DIR / 'format.json').read_text())['source'][
        'tokenizer_vocab_size'
    ]
    small = models.LmConfig(
        vocab_size=vocab, d_model=32, n_heads=2, n_layers=2, mlp_dim=64, multiple_of=32
    )
    monkeypatch.setattr(FineWebEduLmWorkload, 'model_config', small)
    submission = tmp_path / 'lm_tiny_batch.py'
    submission.write_text(SUBMISSION)
    code = cli.main([
        'run', '--workload=finewebedu_lm', f'--submission_path={submission}', '--tuning_ruleset=self',
        f'--data_dir={data_dir}', f'--experiment_dir={tmp_path}', '--experiment_name=lm', '--noprogress',
        '--max_global_steps=4', '--save_checkpoints=false', '--rng_seed=3', '--torch_compile=false',
    ])  # fmt: skip
    assert code == 0
    trial = tmp_path / 'lm' / 'finewebedu_lm_pytorch' / 'trial_1'
    assert json.loads((trial / 'result.json').read_text())['status'] == 'max_global_steps'
    rows = pd.read_csv(trial / 'measurements.csv')
    losses = rows['loss'].dropna().astype(float)
    assert len(losses) == 4 and np.isfinite(losses).all()
    # Untrained on ~385 ids: the loss starts near log(vocab) and the ppl is its exp.
    assert abs(losses.iloc[0] - math.log(vocab)) < 1.0
    evals = rows.dropna(subset=['validation/ppl'])
    assert len(evals) >= 1
    last = evals.iloc[-1]
    for split in ('train', 'validation'):
        assert last[f'{split}/ppl'] == pytest.approx(math.exp(last[f'{split}/loss']), rel=1e-6)
    assert (last['test/loss'], last['test/ppl'], last['test/num_examples']) == (0.0, 1.0, 0)
    # The sequences the eval read: the fixture's validation windows (upstream: 100,000).
    windows = json.loads((data_dir / ip.DATASET_DIR / 'format.json').read_text())['splits'][
        'validation'
    ]['windows']
    assert last['validation/num_examples'] == min(windows, 100_000)
