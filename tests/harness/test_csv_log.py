"""CSV logs: byte-identical to what pandas (upstream's writer) produces; crash-safe."""

import io
import math

import pandas as pd

from algoperf.csv_log import CsvLog

EVAL_ROW = {
    'train/accuracy': 0.90667,
    'train/loss': 0.6249912345678901,
    'validation/accuracy': 0.8933333333333333,
    'validation/loss': 0.65728,
    'validation/num_examples': 300,
    'test/accuracy': 0.92667,
    'test/loss': 1e-07,
    'test/num_examples': 300,
    'score': 2.4711,
    'total_duration': 3.06871,
    'accumulated_submission_time': 2.4711,
    'accumulated_eval_time': 0.56617,
    'accumulated_logging_time': 0.0,
    'global_step': 53,
    'preemption_count': 0,
}


def _pandas_csv(rows, columns):
    buf = io.StringIO()
    pd.DataFrame(rows, columns=columns).to_csv(buf, index=False)
    return buf.getvalue()


def test_first_row_matches_pandas_bytes(tmp_path):
    path = tmp_path / 'eval_measurements.csv'
    CsvLog(str(path)).append(dict(EVAL_ROW))
    # Upstream's first write: pd.DataFrame([metrics], columns=sorted(metrics)).to_csv(index=False).
    assert path.read_text() == _pandas_csv([EVAL_ROW], sorted(EVAL_ROW))


def test_rows_with_same_columns_match_pandas_bytes(tmp_path):
    path = tmp_path / 'm.csv'
    log = CsvLog(str(path))
    rows = []
    for step in range(1, 6):
        row = dict(EVAL_ROW, global_step=step, score=step * 1.1, **{'validation/loss': 1 / step})
        rows.append(row)
        log.append(row)
    assert path.read_text() == _pandas_csv(rows, sorted(EVAL_ROW))


def test_new_columns_appended_like_pandas_concat(tmp_path):
    path = tmp_path / 'measurements.csv'
    log = CsvLog(str(path))
    train = {'loss': 2.5, 'grad_norm': 1.25, 'global_step': 1}
    log.append(dict(train))
    log.append(dict(EVAL_ROW))
    header = path.read_text().splitlines()[0].split(',')
    # pandas.concat([old, new]) keeps old columns first, then new ones in the new row's order.
    expected = sorted(train) + [k for k in EVAL_ROW if k not in train]
    assert header == expected
    df = pd.read_csv(path)
    assert len(df) == 2 and math.isnan(df['validation/accuracy'][0]) and df['loss'][0] == 2.5
    assert df['validation/accuracy'][1] == EVAL_ROW['validation/accuracy']


def test_special_values_formatted_like_pandas(tmp_path):
    row = {
        'a': float('nan'),
        'b': float('inf'),
        'c': True,
        'd': 3,
        'e': -0.0,
        'f': 'text, with comma',
    }
    path = tmp_path / 'x.csv'
    CsvLog(str(path)).append(dict(row))
    assert path.read_text() == _pandas_csv([row], sorted(row))


def test_partial_trailing_line_is_dropped_on_reopen(tmp_path):
    path = tmp_path / 'm.csv'
    log = CsvLog(str(path))
    log.append({'global_step': 1, 'score': 1.5})
    with open(path, 'a') as f:
        f.write('2,2.')  # A process killed mid-write.
    log = CsvLog(str(path))
    log.append({'global_step': 3, 'score': 3.5})
    df = pd.read_csv(path)
    assert df['global_step'].tolist() == [1, 3]


def test_append_does_not_rewrite_file(tmp_path):
    path = tmp_path / 'm.csv'
    log = CsvLog(str(path))
    log.append({'global_step': 1, 'loss': 1.0})
    inode = path.stat().st_ino
    for step in range(2, 50):
        log.append({'global_step': step, 'loss': 1.0 / step})
    assert path.stat().st_ino == inode  # Same file appended to, never replaced.
    assert len(pd.read_csv(path)) == 49


def test_truncate_keeps_selected_rows_verbatim(tmp_path):
    path = tmp_path / 'm.csv'
    log = CsvLog(str(path))
    for step in range(1, 6):
        log.append({'global_step': step, 'score': step / 3})
    before = path.read_text().splitlines()
    dropped = log.truncate(lambda r: int(r['global_step']) <= 3)
    assert dropped == 2
    assert path.read_text().splitlines() == before[:4]
