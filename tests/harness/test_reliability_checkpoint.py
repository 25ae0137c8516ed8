"""Checkpoints never run code from a file, and what we save always loads weights-only.

Issue 18 case 1: a planted `checkpoint_999999` whose pickle payload sits in model_state,
in train_state, or in a legacy-format file used to run on --resume_last_run (exit 0). The
payload here is harmless: unpickling it opens (creates) a marker file.
"""

import os

import numpy as np
import pytest
import torch

from algoperf import checkpoint_utils, cli
from algoperf.errors import CheckpointError

BASELINE = 'submissions/baselines/nadamw/submission.py'


class _Payload:
    """Unpickling this calls open(marker, 'w'): the file appears iff code from the checkpoint ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def _run(tmp_path, *flags):
    return cli.main([
        'run', '--workload=digits', f'--submission_path={BASELINE}', '--tuning_ruleset=self',
        f'--experiment_dir={tmp_path}', '--experiment_name=exp', '--noprogress', '--rng_seed=0',
        '--max_global_steps=3', *flags,
    ])


@pytest.mark.parametrize('variant', ['model_state', 'train_state', 'legacy_format'])
def test_planted_pickle_checkpoint_is_refused_and_never_runs(tmp_path, capsys, variant):
    assert _run(tmp_path) == 0
    trial = tmp_path / 'exp' / 'digits_pytorch' / 'trial_1'
    (trial / 'result.json').unlink()  # The trial counts as unfinished, so a resume loads its checkpoint.
    real = torch.load(checkpoint_utils.latest_checkpoint(str(trial)), weights_only=True)
    marker = tmp_path / 'payload_ran'
    planted = trial / 'checkpoint_999999'
    if variant == 'train_state':
        real['train_state'] = dict(real['train_state'], hook=_Payload(str(marker)))
    else:
        real['model_state'] = _Payload(str(marker))
    torch.save(real, planted, _use_new_zipfile_serialization=variant != 'legacy_format')
    capsys.readouterr()

    code = _run(tmp_path, '--resume_last_run')
    err = capsys.readouterr().err
    assert code == 2
    assert not marker.exists(), 'code from the checkpoint ran'
    lines = [line for line in err.splitlines() if 'error:' in line]
    assert len(lines) == 1 and str(planted) in lines[0] and 'refusing to load' in lines[0], err
    assert err.rstrip().splitlines()[-1] == lines[0] and 'Traceback' not in err
    assert not (trial / 'result.json').exists()  # Nothing recorded for the refused resume.


def test_truncated_and_foreign_checkpoints_are_named(tmp_path):
    bad = tmp_path / 'checkpoint_1'
    bad.write_bytes(b'PK\x03\x04 not really a zip')
    with pytest.raises(CheckpointError, match='checkpoint_1: cannot read checkpoint'):
        checkpoint_utils.load_checkpoint_file(str(bad), torch.device('cpu'))
    torch.save({'weights': torch.ones(2)}, bad)
    with pytest.raises(CheckpointError, match='missing key'):
        checkpoint_utils.load_checkpoint_file(str(bad), torch.device('cpu'))


def _save(tmp_path, model_state=None, train_state=None, evals=()):
    model = torch.nn.Linear(2, 2)
    opt = {'optimizer': torch.optim.SGD(model.parameters(), lr=0.1)}
    return checkpoint_utils.save_checkpoint(opt, model, model_state, train_state or {}, list(evals), 4, 0,
                                            str(tmp_path), True)


def test_numpy_values_are_saved_in_weights_only_form(tmp_path):
    path = _save(
        tmp_path,
        model_state={'running': np.arange(3, dtype=np.float32), 'count': np.int64(7)},
        train_state={'accumulated_submission_time': np.float64(1.25), 'flag': np.bool_(True)},
        evals=[(4, {'validation/loss': np.float32(0.5)})],
    )
    ckpt = torch.load(path, weights_only=True)
    torch.testing.assert_close(ckpt['model_state']['running'], torch.arange(3, dtype=torch.float32))
    assert ckpt['model_state']['count'] == 7 and type(ckpt['model_state']['count']) is int
    assert ckpt['train_state'] == {'accumulated_submission_time': 1.25, 'flag': True}
    assert ckpt['eval_results'] == ((4, {'validation/loss': 0.5}),)


def test_unloadable_state_is_refused_at_save_and_leaves_no_file(tmp_path):
    with pytest.raises(TypeError, match=r"\['model_state'\].*weights-only"):
        _save(tmp_path, model_state={'obj': _Payload(str(tmp_path / 'never'))})
    assert os.listdir(tmp_path) == []  # No checkpoint, no checkpoint_4.tmp.<pid>.
