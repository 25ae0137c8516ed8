"""TensorBoard event files and W&B offline runs hold the scalars the CSV logs hold."""

import json
import os
import time

import pandas as pd
import pytest

from algoperf import cli

BASELINE = 'submissions/baselines/nadamw/submission.py'
UPSTREAM_STYLE = os.path.join(os.path.dirname(__file__), '..', 'data', 'submissions', 'upstream_style.py')
SPACE = os.path.join(os.path.dirname(__file__), '..', 'data', 'submissions', 'upstream_style_space.json')


def run(tmp_path, *flags):
    return cli.main(['run', '--workload=digits', f'--experiment_dir={tmp_path}', '--experiment_name=tb/study_0',
                     '--noprogress', '--rng_seed=2', *flags])


def trial(tmp_path):
    return tmp_path / 'tb' / 'study_0' / 'digits_pytorch' / 'trial_1'


def read_events(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory), size_guidance={'scalars': 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()['scalars']}


def test_tensorboard_events_equal_the_csv_rows(tmp_path):
    pytest.importorskip('tensorboard')
    # The upstream-style submission logs a train 'loss' through workload.metrics_logger every 5 steps.
    assert run(tmp_path, f'--submission_path={UPSTREAM_STYLE}', f'--tuning_search_space={SPACE}',
               '--max_global_steps=12') == 0
    events = read_events(trial(tmp_path))
    rows = pd.read_csv(trial(tmp_path) / 'measurements.csv')
    compared = 0
    for column in ('loss', 'validation/accuracy', 'train/loss', 'accumulated_submission_time', 'score'):
        want = rows[['global_step', column]].dropna()
        got = events[column]
        assert [s for s, _ in got] == want['global_step'].astype(int).tolist(), column
        assert [v for _, v in got] == pytest.approx(want[column].tolist(), rel=1e-6), column
        compared += len(got)
    assert compared > 10
    evals = pd.read_csv(trial(tmp_path) / 'eval_measurements.csv')
    steps = evals['global_step'].tolist()
    times = evals['accumulated_submission_time'].tolist()
    want_ms = [1000 * (t1 - t0) / (s1 - s0) for s0, s1, t0, t1 in zip(steps, steps[1:], times, times[1:])]
    assert [v for _, v in events['step_time_ms']] == pytest.approx(want_ms, rel=1e-5)


def test_tensorboard_can_be_switched_off(tmp_path):
    assert run(tmp_path, f'--submission_path={BASELINE}', '--tuning_ruleset=self', '--max_global_steps=3',
               '--nouse_tensorboard') == 0
    assert not [f for f in os.listdir(trial(tmp_path)) if f.startswith('events.out.tfevents')]


def wandb_records(path):
    """Records of a W&B run file: W&B's 7-byte header, then LevelDB-log blocks of protobuf Records."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf, block = path.read_bytes(), 7, b'', 32768
    assert data[:4] == b':W&B'
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # A block's tail too short for a header is padding.
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack('<IHB', data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):  # FULL or LAST: a whole record.
            record = pb.Record()
            record.ParseFromString(buf)
            yield record


def test_wandb_offline_run_has_scalars_flags_and_group(tmp_path, monkeypatch):
    pytest.importorskip('wandb')
    monkeypatch.setenv('WANDB_MODE', 'offline')
    monkeypatch.setenv('WANDB_SILENT', 'true')
    monkeypatch.setenv('WANDB_PROJECT', 'algoperf-test')
    assert run(tmp_path, f'--submission_path={UPSTREAM_STYLE}', f'--tuning_search_space={SPACE}',
               '--max_global_steps=6', '--use_wandb', '--nouse_tensorboard') == 0
    runs = [d for d in (trial(tmp_path) / 'wandb').iterdir() if d.name.startswith('offline-run-')]
    assert len(runs) == 1
    # W&B's service process writes the run file asynchronously; its last record is 'exit'.
    deadline, records = time.monotonic() + 60, []
    while time.monotonic() < deadline:
        records = list(wandb_records(next(runs[0].glob('*.wandb'))))
        if records and records[-1].WhichOneof('record_type') == 'exit':
            break
        time.sleep(0.5)
    run_record = next(r.run for r in records if r.WhichOneof('record_type') == 'run')
    assert (run_record.run_group, run_record.display_name, run_record.project) == (
        'tb/study_0/digits_pytorch', 'trial_1', 'algoperf-test')
    config = {i.key or '/'.join(i.nested_key): json.loads(i.value_json) for i in run_record.config.update}
    assert config['flags']['workload'] == 'digits' and config['flags']['use_wandb'] is True
    assert set(config['hyperparameters']) == {'learning_rate', 'weight_decay'}
    history = {}
    for r in records:
        if r.WhichOneof('record_type') == 'history':
            items = {i.key or '/'.join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            history[items['_step']] = items
    rows = pd.read_csv(trial(tmp_path) / 'measurements.csv')
    evals = rows.dropna(subset=['validation/accuracy'])
    assert sorted(history) == sorted(set(rows['global_step'].astype(int)) - {6}) + [6]
    for _, row in evals.iterrows():
        got = history[int(row['global_step'])]
        for column in ('validation/accuracy', 'train/loss', 'accumulated_submission_time'):
            assert got[column] == pytest.approx(row[column], rel=1e-9), column
    assert history[5]['loss'] == pytest.approx(rows.loc[rows['global_step'] == 5, 'loss'].item(), rel=1e-9)


def test_missing_package_is_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'wandb' else real(name, *a))
    assert run(tmp_path, f'--submission_path={BASELINE}', '--tuning_ruleset=self', '--use_wandb') == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'wandb' in err[0]
    assert not (tmp_path / 'tb').exists()
