"""`algoperf data ogbg`: the OGB ogbg-molpcba release -> the reader's `.npy` columns.

Source: OGB's `pcba.zip` (https://snap.stanford.edu/ogb/data/graphproppred/csv_mol_download/
pcba.zip, 437,929 molecules), unzipped. It is also what TFDS `ogbg_molpcba` (upstream's
data) is built from, with the same scaffold split, so the graphs, features, labels and
split membership are upstream's. Read from it::

    pcba/raw/{num-node-list,num-edge-list,node-feat,edge-feat,edge,graph-label}.csv.gz
    pcba/split/scaffold/{train,valid,test}.csv.gz

(`edge.csv.gz` holds each bond once, as node indices local to its graph;
`graph-label.csv.gz` has 128 columns with empty cells for missing labels.) Written, as
`input_pipeline.LAYOUT` says: per split the graphs in ascending OGB index (TFDS's order),
`num_nodes`/`num_edges` int32, features in the narrowest integer type that holds them
(molpcba's are categorical, < 120), `edge_index` int32, `labels` int8 with -1 for NaN,
plus `format.json`. The output appears only when complete (written beside it, renamed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from algoperf.data_io import atomic_directory
from workloads.ogbg import input_pipeline as ip

RAW_FILES = {
    'num_nodes': 'num-node-list.csv.gz',
    'num_edges': 'num-edge-list.csv.gz',
    'node_feat': 'node-feat.csv.gz',
    'edge_feat': 'edge-feat.csv.gz',
    'edge_index': 'edge.csv.gz',
    'labels': 'graph-label.csv.gz',
}
SPLIT_FILES = {'train': 'train.csv.gz', 'validation': 'valid.csv.gz', 'test': 'test.csv.gz'}


def find_release(raw_dir: str) -> str:
    """The release directory (the one holding raw/ and split/): `raw_dir` or its `pcba/`."""
    for candidate in (raw_dir, os.path.join(raw_dir, 'pcba')):
        if os.path.isdir(os.path.join(candidate, 'raw')):
            return candidate
    raise FileNotFoundError(
        f'--raw_dir={raw_dir}: no raw/ directory here or in pcba/; expected the unzipped OGB '
        'release pcba.zip (pcba/raw/*.csv.gz, pcba/split/scaffold/*.csv.gz)'
    )


def _read_csv(path: str, dtype) -> np.ndarray:
    import pandas as pd

    if not os.path.exists(path):
        raise FileNotFoundError(f'{path}: not found (OGB ogbg-molpcba release)')
    try:
        values = pd.read_csv(path, compression='gzip', header=None).to_numpy()
    except Exception as e:
        raise ValueError(f'{path}: unreadable ({type(e).__name__}: {e})') from e
    if dtype is np.float32:
        return values.astype(np.float32)
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f'{path}: expected integers, found {values.dtype} values')
    return values.astype(dtype)


def read_release(release: str, log=print) -> tuple[dict, dict]:
    """(columns over all graphs, {split: sorted graph indices}); validates consistency."""
    cols = {}
    for i, (name, file) in enumerate(RAW_FILES.items(), 1):
        t0 = time.perf_counter()
        cols[name] = _read_csv(
            os.path.join(release, 'raw', file), np.float32 if name == 'labels' else np.int64
        )
        log(
            f'  [{i}/{len(RAW_FILES)}] raw/{file}: {cols[name].shape} in {time.perf_counter() - t0:.1f} s'
        )
    for name in ('num_nodes', 'num_edges'):
        cols[name] = cols[name].reshape(-1)
    _check(release, cols)
    splits = {}
    for split, file in SPLIT_FILES.items():
        ids = _read_csv(os.path.join(release, 'split', 'scaffold', file), np.int64).reshape(-1)
        if len(ids) and (ids.min() < 0 or ids.max() >= len(cols['num_nodes'])):
            raise ValueError(f'{release}/split/scaffold/{file}: graph index out of range')
        splits[split] = np.sort(ids)  # TFDS yields a split's graphs in ascending index.
    return cols, splits


def _check(release: str, cols: dict) -> None:
    raw = os.path.join(release, 'raw')
    g = len(cols['num_nodes'])
    n, e = int(cols['num_nodes'].sum()), int(cols['num_edges'].sum())
    expect = {'num_edges': (g,), 'labels': (g, None), 'node_feat': (n, None),
              'edge_feat': (e, None), 'edge_index': (e, 2)}  # fmt: skip
    for name, shape in expect.items():
        got = cols[name].shape
        if len(got) != len(shape) or any(s is not None and s != d for s, d in zip(shape, got)):
            raise ValueError(
                f'{raw}/{RAW_FILES[name]}: shape {got}, expected {shape} from '
                f'{RAW_FILES["num_nodes"]} and {RAW_FILES["num_edges"]}'
            )
    graph_of_edge = np.repeat(np.arange(g), cols['num_edges'])
    bad = (cols['edge_index'] < 0) | (cols['edge_index'] >= cols['num_nodes'][graph_of_edge, None])
    if bad.any():
        row = int(np.argwhere(bad.any(axis=1))[0, 0])
        raise ValueError(
            f'{raw}/{RAW_FILES["edge_index"]}: line {row + 1} names a node outside graph '
            f'{graph_of_edge[row]} (indices are local to each graph)'
        )
    labels = cols['labels']
    if not np.all(np.isnan(labels) | (labels == 0) | (labels == 1)):
        raise ValueError(f'{raw}/{RAW_FILES["labels"]}: labels must be 0, 1 or empty')


def _narrow(values: np.ndarray, path: str) -> np.ndarray:
    """The smallest integer dtype that holds `values` (features are small categories)."""
    if values.size == 0:
        return values.astype(np.uint8)
    if values.min() < 0:
        raise ValueError(f'{path}: negative feature values')
    return values.astype(np.min_scalar_type(int(values.max())))


def write_split(out_dir: str, cols: dict, ids: np.ndarray) -> None:
    """The graphs `ids` (in order) as the reader's columns in `out_dir`."""
    os.makedirs(out_dir)
    node_off = np.concatenate([[0], np.cumsum(cols['num_nodes'])])
    edge_off = np.concatenate([[0], np.cumsum(cols['num_edges'])])
    nodes, edges = cols['num_nodes'][ids], cols['num_edges'][ids]
    node_rows = ip.concat_ranges(node_off[ids], nodes)
    edge_rows = ip.concat_ranges(edge_off[ids], edges)
    labels = cols['labels'][ids]
    arrays = {
        'num_nodes': nodes.astype(np.int32),
        'num_edges': edges.astype(np.int32),
        'node_feat': _narrow(cols['node_feat'][node_rows], RAW_FILES['node_feat']),
        'edge_feat': _narrow(cols['edge_feat'][edge_rows], RAW_FILES['edge_feat']),
        'edge_index': cols['edge_index'][edge_rows].astype(np.int32),
        'labels': np.where(np.isnan(labels), -1, labels).astype(np.int8),
    }
    for name, array in arrays.items():
        np.save(os.path.join(out_dir, name + '.npy'), array)


def convert(raw_dir: str, data_dir: str, overwrite: bool = False, log=print) -> str:
    """Converts the release in `raw_dir`; returns the written `<data_dir>/ogbg_molpcba`."""
    release = find_release(raw_dir)
    final = os.path.join(data_dir, ip.DATASET_DIR)
    if os.path.exists(final) and not overwrite:
        raise FileExistsError(f'{final} exists; pass --overwrite to replace it')
    log(f'Reading the OGB release in {release}')
    cols, splits = read_release(release, log)
    with atomic_directory(final) as tmp:
        counts = {}
        for split, ids in splits.items():
            write_split(os.path.join(tmp, split), cols, ids)
            counts[split] = len(ids)
            log(f'  wrote {split}: {len(ids):,} graphs')
        meta = {
            'format': ip.FORMAT_NAME,
            'version': ip.FORMAT_VERSION,
            'source': os.path.abspath(release),
            'graphs': counts,
            'label_missing': -1,
        }
        with open(os.path.join(tmp, 'format.json'), 'w') as f:
            json.dump(meta, f, indent=2)
    log(f'Wrote {final}')
    return final


def main(argv: list[str], prog: str = 'algoperf data ogbg') -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description='Convert the OGB ogbg-molpcba release (unzipped pcba.zip) into the reader format.',
    )
    parser.add_argument(
        '--raw_dir', required=True, help='The unzipped release (pcba/ or its parent).'
    )
    parser.add_argument('--data_dir', required=True, help='Writes <data_dir>/ogbg_molpcba/.')
    parser.add_argument('--overwrite', action='store_true', help='Replace an existing conversion.')
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    convert(args.raw_dir, args.data_dir, args.overwrite)
    print(
        f'Done in {time.perf_counter() - t0:.1f} s; use --data_dir={args.data_dir}', file=sys.stderr
    )
    return 0
