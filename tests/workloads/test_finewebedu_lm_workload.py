"""finewebedu_lm workload API: constants, model_fn, loss_fn, the fused-head path, eval counts.

References: the label-smoothed cross entropy written out from log-softmax (fp64), the
model run window by window for the eval loss, and the plain model_fn + loss_fn path for
the fused head. Data: token rows written as HF `save_to_disk` folders by the data fixture
and converted with `algoperf data finewebedu_lm`.
"""

import dataclasses
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from algoperf import cli, registry, spec
from algoperf.runtime import Runtime
from workloads.finewebedu_lm import fixture as fx
from workloads.finewebedu_lm import input_pipeline as ip
from workloads.finewebedu_lm import models
from workloads.finewebedu_lm import workload as lm

CPU = Runtime(torch.device('cpu'))
VOCAB = 257
SMALL = models.LmConfig(vocab_size=VOCAB, seq_len=ip.SEQUENCE_LENGTH, d_model=32, n_heads=2, n_layers=2,
                        mlp_dim=64, multiple_of=32)  # fmt: skip
TRAIN, EVAL = spec.ForwardPassMode.TRAIN, spec.ForwardPassMode.EVAL


def _workload(runtime=CPU, speed=None, **kwargs):
    cfg = SMALL if speed is None else dataclasses.replace(SMALL, speed=speed)
    return registry.get_workload('finewebedu_lm', runtime=runtime, model_config=cfg, **kwargs)


def _batch(n=2, length=64, seed=0, masked=False):
    """Shorter than the data's 1024 (the model takes any L <= seq_len): cheap on CPU."""
    g = torch.Generator().manual_seed(seed)
    window = torch.randint(0, VOCAB, (n, length + 1), generator=g)
    weights = (torch.rand(n, length, generator=g) < 0.7).float() if masked else None
    return {'inputs': window[:, :-1].int(), 'targets': window[:, 1:], 'weights': weights}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    """11 validation and 15 train windows of random ids < 257 (documents of 50-700 tokens)."""
    root = tmp_path_factory.mktemp('lm_data')
    rng = np.random.default_rng(0)

    def rows(windows):
        out, total = [], 0
        while total < windows * ip.WINDOW + 10:
            n = int(rng.integers(50, 700))
            out.append(rng.integers(0, VOCAB - 1, n).tolist() + [VOCAB - 1])
            total += n + 1
        return out

    fx.write_hf_layout({'train': rows(15), 'val': rows(11)}, str(root / 'hf'), files_per_split=2)
    args = [
        'data',
        'finewebedu_lm',
        f'--hf_dir={root / "hf"}',
        f'--data_dir={root / "data"}',
        f'--eos_id={VOCAB - 1}',
    ]
    assert cli.main(args) == 0
    return str(root / 'data')


# ---- constants -----------------------------------------------------------------------------------
def test_registry_class_and_upstreams_constants():
    wl = registry.get_workload('finewebedu_lm', runtime=CPU)
    assert type(wl).__name__ == 'FineWebEduLmWorkload'
    assert wl.model_config == models.LmConfig()  # Upstream's sizes, speed techniques on.
    assert (wl.target_metric_name, wl.validation_target_value, wl.test_target_value) == (
        'ppl',
        22.2995,
        None,
    )
    assert (wl.max_allowed_runtime_sec, wl.eval_period_time_sec, wl.step_hint) == (
        31_967,
        2_571,
        72_000,
    )
    assert (wl.num_validation_examples, wl.num_eval_train_examples, wl.num_test_examples) == (
        100_000,
        10_000,
        0,
    )
    assert wl.eval_batch_size == 256 and wl.loss_type == spec.LossType.SOFTMAX_CROSS_ENTROPY
    assert wl.has_reached_validation_target(
        {'validation/ppl': 22.2}
    ) and not wl.has_reached_validation_target({'validation/ppl': 22.3})
    assert wl.has_reached_test_target({})  # No test target: always True, as upstream.
    # Upstream's test, which matches no registered name (the tied head is not a parameter).
    assert wl.is_output_params('lm_head.weight') and not wl.is_output_params('embed_tokens.weight')


# ---- model_fn ------------------------------------------------------------------------------------
def test_model_fn_returns_bf16_logits_under_autocast_and_no_grad_in_eval():
    wl = _workload()
    model, state = wl.init_model_fn([0, 0])
    assert state is None and all(p.dtype == torch.float32 for p in model.parameters())
    batch = _batch()
    logits, state = wl.model_fn(model, batch, None, TRAIN, None, True, dropout_rate=0.1)
    assert logits.shape == (2, 64, VOCAB) and logits.dtype == torch.bfloat16
    assert state is None and model.training and logits.requires_grad
    eval_logits, _ = wl.model_fn(model, batch, None, EVAL, None, False)
    assert not model.training and not eval_logits.requires_grad
    torch.testing.assert_close(eval_logits, logits.detach(), rtol=0, atol=0)  # No dropout.
    one_hot = {**batch, 'inputs': F.one_hot(batch['inputs'].long(), VOCAB)}
    torch.testing.assert_close(
        wl.model_fn(model, one_hot, None, EVAL, None, False)[0], eval_logits, rtol=0, atol=0
    )
    fp32 = _workload(compute_dtype=None)
    assert fp32.model_fn(model, batch, None, EVAL, None, False)[0].dtype == torch.float32


def test_init_model_fn_is_seeded():
    a, _ = _workload().init_model_fn([5, 0])
    b, _ = _workload().init_model_fn([5, 0])
    c, _ = _workload().init_model_fn([6, 0])
    assert torch.equal(a.embed_tokens.weight, b.embed_tokens.weight)
    assert not torch.equal(a.embed_tokens.weight, c.embed_tokens.weight)


# ---- loss_fn -------------------------------------------------------------------------------------
@pytest.mark.parametrize('label_smoothing', [0.0, 0.1])
def test_loss_fn_is_token_counted_label_smoothed_cross_entropy(label_smoothing):
    g = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(3, 7, 50, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 50, (3, 7), generator=g)
    weights = (torch.rand(3, 7, generator=g) < 0.7).float()
    out = _workload().loss_fn(targets, logits, weights, label_smoothing=label_smoothing)
    log_probs = torch.log_softmax(logits, dim=-1)
    # -((1 - a) logp[t] + (a / V) sum logp), times the weights (upstream's JAX formula).
    expected = -((1 - label_smoothing) * log_probs.gather(-1, targets[..., None])[..., 0]
                 + label_smoothing / 50 * log_probs.sum(-1)) * weights  # fmt: skip
    torch.testing.assert_close(out['per_example'], expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out['summed'], expected.sum(), rtol=1e-12, atol=1e-12)
    assert out['n_valid_examples'].item() == weights.sum().item()  # Tokens, not sequences.
    unmasked = _workload().loss_fn(targets, logits, None, label_smoothing)
    assert (
        unmasked['n_valid_examples'].dtype == torch.float32
        and unmasked['n_valid_examples'].item() == 21
    )
    assert unmasked['per_example'].shape == (3, 7)


# ---- the fused head ------------------------------------------------------------------------------
@pytest.mark.parametrize('masked', [False, True], ids=['train_batch', 'weighted'])
def test_model_loss_fn_equals_model_fn_then_loss_fn(masked):
    pytest.importorskip('kernels.fused_linear_cross_entropy')
    fused, plain = (
        _workload(compute_dtype=None),
        _workload(compute_dtype=None, speed=models.LmSpeed.upstream()),
    )
    model, _ = fused.init_model_fn([1, 0])
    assert lm._unwrap(model).fast_paths()['fused_loss_head']
    batch = _batch(masked=masked)

    def loss_and_grads(run):
        model.zero_grad()
        out = run()
        (out['summed'] / out['n_valid_examples']).backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters()}

    expected, expected_grads = loss_and_grads(lambda: plain.loss_fn(
        batch['targets'], plain.model_fn(model, batch, None, TRAIN, None, True)[0], batch['weights'], 0.1))  # fmt: skip
    out, grads = loss_and_grads(lambda: fused.model_loss_fn(model, batch, TRAIN, 0.1))
    assert out['n_valid_examples'].item() == expected['n_valid_examples'].item()
    # fp32: the same per-token sums over V = 257 in another blocking, ~1e-7 relative.
    torch.testing.assert_close(
        out['per_example'], expected['per_example'].detach(), rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(out['summed'], expected['summed'].detach(), rtol=1e-6, atol=0)
    for name, g in expected_grads.items():
        torch.testing.assert_close(
            grads[name], g, rtol=1e-4, atol=1e-4 * g.abs().max().item(), msg=name
        )
    # Switched off, model_loss_fn IS model_fn + loss_fn (bit for bit).
    off, _ = loss_and_grads(lambda: plain.model_loss_fn(model, batch, TRAIN, 0.1))
    torch.testing.assert_close(off['summed'], expected['summed'], rtol=0, atol=0)


def test_fused_head_under_bf16_autocast_matches_upstreams_path():
    pytest.importorskip('kernels.fused_linear_cross_entropy')
    wl = _workload()
    model, _ = wl.init_model_fn([2, 0])
    batch = _batch(masked=True)
    with torch.no_grad():
        fused = wl.model_loss_fn(model, batch, EVAL, 0.0)
        logits, _ = wl.model_fn(model, batch, None, EVAL, None, False)
        plain = wl.loss_fn(batch['targets'], logits, batch['weights'], 0.0)
    # Both round the logits to bf16 and take the softmax in fp32; only the matmul
    # blocking differs (one bf16 ulp, 2**-8, on a logit moves its CE by <= that).
    torch.testing.assert_close(fused['per_example'], plain['per_example'], rtol=2**-7, atol=2**-7)
    assert fused['summed'].item() == pytest.approx(plain['summed'].item(), rel=1e-4)


# ---- eval ----------------------------------------------------------------------------------------
def _window_losses(wl, model, data_dir, split, count):
    """Token-mean CE of the split's first `count` windows, one window at a time."""
    stream = ip.load_stream(data_dir, split)
    total = 0.0
    for i in range(count):
        batch = ip.to_batch(stream.window_range(i, i + 1))
        logits, _ = wl.model_fn(model, batch, None, EVAL, None, False)
        total += F.cross_entropy(logits[0].double(), batch['targets'][0], reduction='sum').item()
    return total / (count * ip.SEQUENCE_LENGTH)


@pytest.fixture(scope='module')
def eval_model(data_dir):
    """A model and the reference token-mean CE of the first 11 validation / 12 train windows."""
    wl = _workload(compute_dtype=None)
    model, _ = wl.init_model_fn([0, 0])
    return model, {
        'validation': _window_losses(wl, model, data_dir, 'validation', 11),
        'eval_train': _window_losses(wl, model, data_dir, 'eval_train', 12),
    }


@pytest.mark.parametrize('world', [1, 2, 3])
def test_each_eval_window_is_evaluated_once_on_any_number_of_ranks(data_dir, eval_model, world):
    model, expected = eval_model
    G = 6  # Divisible by every world size here; 10 examples -> 2 batches = 12 > 11 windows.

    def sums(split, num_examples):
        return sum(
            _workload(Runtime(torch.device('cpu'), rank=r, local_rank=r, world_size=world), compute_dtype=None)
            ._eval_sums(split, num_examples, G, model, [0, 0], data_dir)
            for r in range(world)
        )  # fmt: skip

    loss_sum, tokens, sequences = sums('validation', 10).tolist()
    assert sequences == 11 and tokens == 11 * ip.SEQUENCE_LENGTH  # The split once, then padding.
    assert loss_sum / tokens == pytest.approx(expected['validation'], rel=1e-5)
    # A pass shorter than the split reads ceil(n / G) whole batches from its start (JAX's
    # 391 x 256 = 100,096 of 100,000): 7 of the 15 train windows -> 2 batches -> 12.
    loss_sum, tokens, sequences = sums('eval_train', 7).tolist()
    assert sequences == 12 and tokens == 12 * ip.SEQUENCE_LENGTH
    assert loss_sum / tokens == pytest.approx(expected['eval_train'], rel=1e-5)


def test_memory_bounded_eval_forwards_give_the_same_sums(data_dir, eval_model):
    model, expected = eval_model
    wl = _workload(compute_dtype=None)
    wl.eval_max_examples_per_forward = 4  # A global batch of 6 as forwards of 4 + 2.
    loss_sum, tokens, sequences = wl._eval_sums(
        'validation', 10, 6, model, [0, 0], data_dir
    ).tolist()
    assert (sequences, tokens) == (11, 11 * ip.SEQUENCE_LENGTH)
    assert loss_sum / tokens == pytest.approx(expected['validation'], rel=1e-5)


def test_eval_model_logs_upstreams_keys_and_the_fixed_test_row(data_dir):
    wl = _workload()
    model, _ = wl.init_model_fn([0, 0])
    wl.workload_spec = dataclasses.replace(
        wl.workload_spec, num_eval_train_examples=2, num_validation_examples=3
    )
    result = wl.eval_model(2, model, None, [0, 0], data_dir, None, 0)
    assert set(result) == {
        'train/loss', 'train/ppl', 'validation/loss', 'validation/ppl', 'validation/num_examples',
        'test/loss', 'test/ppl', 'test/num_examples',
    }  # fmt: skip
    assert (result['test/loss'], result['test/ppl'], result['test/num_examples']) == (0.0, 1.0, 0)
    assert result['validation/num_examples'] == 3
    for split in ('train', 'validation'):
        assert result[f'{split}/ppl'] == pytest.approx(math.exp(result[f'{split}/loss']), rel=1e-12)
        # An untrained model is close to uniform over the 257 ids: ppl ~ 257.
        assert 200 < result[f'{split}/ppl'] < 330
    again = wl.eval_model(2, model, None, [0, 0], data_dir, None, 0)
    assert again == result  # Every eval reads the same windows.


# ---- batches -------------------------------------------------------------------------------------
def test_train_and_synthetic_batches_have_upstreams_layout(data_dir):
    wl = _workload()
    real = next(wl._build_input_queue([3, 0], 'train', data_dir, 4))
    fake = next(wl._build_synthetic_input_queue([3, 0], 'train', 4))
    for batch in (real, fake):
        assert batch['inputs'].dtype == torch.int32 and batch['targets'].dtype == torch.int64
        assert batch['inputs'].shape == batch['targets'].shape == (4, ip.SEQUENCE_LENGTH)
        assert batch['weights'] is None
    ev = next(wl._build_synthetic_input_queue([3, 0], 'validation', 4))
    assert ev['weights'].dtype == torch.float32 and ev['weights'].shape == (4, ip.SEQUENCE_LENGTH)
    queue = wl._build_input_queue([3, 0], 'train', data_dir, 4)
    assert hasattr(queue, 'fast_forward')  # The runner's exact resume.
    with pytest.raises(ValueError, match='no .test. split'):
        wl._build_input_queue([3, 0], 'test', data_dir, 4)


# ---- two real ranks (gloo) -----------------------------------------------------------------------
DDP_SCRIPT = """
import json, sys
import torch
import torch.distributed as dist
from algoperf import spec
from algoperf.runtime import Runtime
from tests.workloads.test_finewebedu_lm_workload import SMALL, _batch
from workloads.finewebedu_lm.workload import FineWebEduLmWorkload

out_dir, data_dir = sys.argv[1], sys.argv[2]
runtime = Runtime.from_env(device='cpu')
runtime.init_process_group()
rank, world = runtime.rank, runtime.world_size


def grads(wl, model, batch, fused):
    model.zero_grad()
    if fused:
        out = wl.model_loss_fn(model, batch, spec.ForwardPassMode.TRAIN, 0.1)
    else:
        logits, _ = wl.model_fn(model, batch, None, spec.ForwardPassMode.TRAIN, None, True)
        out = wl.loss_fn(batch['targets'], logits, batch['weights'], 0.1)
    (out['summed'] / out['n_valid_examples']).backward()
    inner = getattr(model, 'module', model)
    return {n: p.grad.clone() for n, p in inner.named_parameters()}


wl = FineWebEduLmWorkload(runtime=runtime, model_config=SMALL, compute_dtype=None)
model, _ = wl.init_model_fn([0, 0])
single = FineWebEduLmWorkload(runtime=Runtime(torch.device('cpu')), model_config=SMALL, compute_dtype=None)
reference, _ = single.init_model_fn([0, 0])
full = _batch(n=4)
n = 4 // world
local = {k: None if v is None else v[rank * n : (rank + 1) * n] for k, v in full.items()}
errors = {}
for fused in (False, True):
    g, r = grads(wl, model, local, fused), grads(single, reference, full, fused)
    errors[str(fused)] = max(((g[k] - r[k]).abs().max() / r[k].abs().max()).item() for k in r)
result = wl._eval_model_on_split('validation', 10, 6, model, None, [0, 0], data_dir)
with open(f'{out_dir}/rank{rank}.json', 'w') as f:
    json.dump({'ddp': type(model).__name__, 'errors': errors, 'eval': result}, f)
dist.destroy_process_group()
"""


@pytest.mark.slow  # Two processes importing torch and the kernels: ~40 s on 2 cores.
def test_ddp_gradients_of_both_heads_and_the_all_reduced_eval(data_dir, tmp_path):
    script = tmp_path / 'ddp_lm.py'
    script.write_text(DDP_SCRIPT)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=root)
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
         str(script), str(tmp_path), data_dir],
        check=False, capture_output=True, text=True, timeout=300, env=env, cwd=root,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    wl = _workload(compute_dtype=None)
    model, _ = wl.init_model_fn([0, 0])
    expected = wl._eval_model_on_split('validation', 10, 6, model, None, [0, 0], data_dir)
    for rank in range(2):
        out = json.loads((tmp_path / f'rank{rank}.json').read_text())
        assert out['ddp'] == 'DistributedDataParallel'
        # DDP's averaged half-batch gradients vs the full batch, fp32: measured ~4e-7.
        assert out['errors']['False'] <= 1e-5 and out['errors']['True'] <= 1e-5, out['errors']
        assert out['eval']['loss'] == pytest.approx(expected['loss'], rel=1e-6)
        assert out['eval']['ppl'] == pytest.approx(expected['ppl'], rel=1e-6)


def test_a_diverged_models_ppl_is_inf_not_an_error():
    wl = _workload()
    wl._eval_sums = lambda *args: torch.tensor([800.0 * 1024, 1024, 1], dtype=torch.float64)
    result = wl._eval_model_on_split('validation', 1, 1, None, None, [0, 0], None)
    assert result == {'loss': 800.0, 'ppl': math.inf}
