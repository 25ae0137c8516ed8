"""`algoperf bench`: run benchmark suites and render their results into RESULTS.md.

A suite is one ``benchmarks/bench_<suite>.py`` or ``benchmarks/<dir>/bench_<suite>.py``
file of a repository checkout (benchmarks are not installed with the package). Each runs
in its own ``python -m pytest <file> --benchmark-json=...`` subprocess from the checkout
root, one after another (never two at once: they would share cores and memory bandwidth),
writing ``benchmarks/results/<suite>_<host-tag>_<yyyymmdd>.json``; the host tag is
``cpu<usable cores>`` or ``<gpu>x<count>`` (e.g. ``h100x8``). Then, in
``benchmarks/RESULTS.md``, the section between ``<!-- bench:<suite>:begin -->`` and
``<!-- bench:<suite>:end -->`` is regenerated (appended with its markers when absent);
hand-written text outside the markers is left as it is.

A section has the run's machine line and one table per benchmark group: provider, median,
min, rounds, ratio to the group's fastest median and, when benchmarks name one in
``extra_info['peer']``, to that peer provider. Optional ``extra_info`` keys add columns:
``items`` + ``item_unit`` (time per item, e.g. per step), ``bytes_moved`` (GB/s and % of
the device's streaming bandwidth from ``machine_info['memory_bandwidth']``; ``device``
says which), and ``report`` (a dict of columns shown as given). See benchmarks/_harness.py.

``--quick`` is a smoke run: it sets ``ALGOPERF_BENCH_QUICK=1`` (suites then time 2 rounds,
the bandwidth probe 3 passes), writes the JSON to a temporary directory, leaves RESULTS.md
alone and prints the section instead. Its sections say they are not for claims (a line
under the title and one under every table, and a line on the terminal).

A "% of streaming BW" figure above 100 % cannot be a DRAM-bound kernel's real figure (the
data stayed in cache, ``bytes_moved`` overcounts, or the probe read low, as a quick run's
3-pass probe can): its cell is marked ``⚠``, a note follows the table and each one is
named on stderr. The same goes for ``report`` columns whose name mentions bandwidth. ``--from-json FILE`` renders an existing JSON
without running anything. Library code: reads JSON and runs subprocesses, never imports
``benchmarks``.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

RESULTS_MD = os.path.join('benchmarks', 'RESULTS.md')
RESULTS_DIR = os.path.join('benchmarks', 'results')
SUITE_GLOBS = ('benchmarks/bench_*.py', 'benchmarks/*/bench_*.py')
QUICK_ENV = 'ALGOPERF_BENCH_QUICK'  # Read by benchmarks/_harness.py.
MISSING = '—'
OVER_MARK = '⚠'  # A bandwidth percentage above 100 %.
QUICK_BANNER = ('**Quick (smoke) run: not for claims.** Few timed rounds and a short bandwidth probe; '
                'rerun without `--quick` to measure.')
QUICK_TABLE_NOTE = '_Quick run: not for claims._'
OVER_NOTE = (f'{OVER_MARK} above 100 % of the measured streaming bandwidth: not attainable from memory '
             '(cache-resident data, an overcounted `bytes_moved`, or a low probe); not a figure to quote.')


class BenchError(Exception):
    """User-facing problem (unknown suite, no checkout, bad JSON): one line, exit 2."""


# ---- discovery ---------------------------------------------------------------------------------
def _is_checkout(path: str) -> bool:
    return os.path.isfile(os.path.join(path, 'benchmarks', 'conftest.py'))


def find_repo(start: str | None = None) -> str:
    """The checkout root: ``start`` (default: the working directory) or a parent of it,
    else the directory above this installed package; one with ``benchmarks/conftest.py``.

    Raises:
        BenchError: no checkout found.
    """
    path = os.path.abspath(start or os.getcwd())
    while True:
        if _is_checkout(path):
            return path
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    beside_package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if start is None and _is_checkout(beside_package):
        return beside_package
    where = f'in or above {start}' if start else 'in or above the working directory'
    raise BenchError(
        f'no repository checkout found {where} (a directory with benchmarks/conftest.py); '
        'run from a checkout or pass --repo DIR'
    )


def discover_suites(root: str) -> dict[str, str]:
    """Suite name -> file path relative to ``root``, sorted by name.

    Raises:
        BenchError: two files define the same suite name.
    """
    suites: dict[str, str] = {}
    for pattern in SUITE_GLOBS:
        for path in glob.glob(os.path.join(root, pattern)):
            rel = os.path.relpath(path, root)
            name = _suite_name(rel)
            if name in suites:
                raise BenchError(f'suite {name!r} is defined twice: {suites[name]} and {rel}')
            suites[name] = rel
    return dict(sorted(suites.items()))


def _suite_name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0].removeprefix('bench_')


def suite_of(data: dict[str, Any]) -> str:
    """The suite a pytest-benchmark JSON came from, by its benchmarks' file name.

    Raises:
        BenchError: the JSON has no benchmarks.
    """
    benchmarks = data.get('benchmarks') or []
    if not benchmarks:
        raise BenchError('the JSON holds no benchmarks (was every benchmark skipped?)')
    return _suite_name(benchmarks[0]['fullname'].split('::', 1)[0])


def host_tag() -> str:
    """``<gpu>x<count>`` when nvidia-smi lists GPUs (e.g. ``h100x8``), else ``cpu<cores>``."""
    try:
        out = subprocess.run(
            ['nvidia-smi', '--query-gpu=name', '--format=csv,noheader'],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        gpus = (
            [line.strip() for line in out.stdout.splitlines() if line.strip()]
            if out.returncode == 0
            else []
        )
    except (OSError, subprocess.SubprocessError):
        gpus = []
    if gpus:
        model = re.search(r'\b([A-Z]{1,2}\d{2,4}[A-Z]?)\b', gpus[0])
        slug = (
            model.group(1)
            if model
            else re.sub(r'[^a-z0-9]+', '-', gpus[0].lower().removeprefix('nvidia '))
        )
        return f'{slug.lower()}x{len(gpus)}'
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    return f'cpu{cores}'


# ---- rendering ---------------------------------------------------------------------------------
def format_time(seconds: float) -> str:
    """3 significant digits in s, ms, µs or ns (``9.38 ms``, ``154 µs``)."""
    for unit, scale in (('s', 1.0), ('ms', 1e-3), ('µs', 1e-6), ('ns', 1e-9)):
        if seconds >= scale or unit == 'ns':
            value = seconds / scale
            digits = 0 if value >= 100 else 1 if value >= 10 else 2
            return f'{value:.{digits}f} {unit}'
    raise AssertionError('unreachable')


def _ratio(value: float, base: float) -> str:
    return f'{value / base:.2f}x' if base > 0 else MISSING


def _stream_gbps(machine: dict[str, Any], device: str) -> float | None:
    probes = machine.get('memory_bandwidth') or {}
    probe = probes.get(device) or probes.get(f'{device}:0')
    if not probe:
        return None
    return max(v for k, v in probe.items() if k.endswith('_gbps') and not k.endswith('median_gbps'))


def machine_line(data: dict[str, Any]) -> str:
    """One line: CPU, cores, memory, GPUs, torch, commit, extension, streaming bandwidth."""
    m = data.get('machine_info', {})
    cpu = m.get('cpu_model') or m.get('cpu', {}).get('brand_raw') or m.get('processor') or '?'
    cores = m.get('cpu_count') or m.get('cpu', {}).get('count')
    parts = [
        f'{cpu}, {cores} cores'
        + (f' ({m["cpu_affinity"]} usable)' if m.get('cpu_affinity') not in (None, cores) else '')
    ]
    if m.get('memory_bytes'):
        parts.append(f'{m["memory_bytes"] / 2**30:.0f} GiB')
    if m.get('gpu_count'):
        names = m.get('gpu_names') or [m.get('gpu_name')]
        parts.append(
            f'{m["gpu_count"]}x {names[0]} (CUDA {m.get("cuda_runtime")}, driver {m.get("cuda_driver")})'
        )
    threads = f' ({m["torch_num_threads"]} threads)' if m.get('torch_num_threads') else ''
    parts.append(f'torch {m.get("torch_version", "?")}{threads}')
    if m.get('triton_version') not in (None, 'not installed'):
        parts.append(f'triton {m["triton_version"]}')
    sha = m.get('git_sha') or data.get('commit_info', {}).get('id')
    dirty = m.get('git_dirty', data.get('commit_info', {}).get('dirty'))
    parts.append(f'commit {sha[:7]}' + (' (dirty)' if dirty else '') if sha else 'commit unknown')
    if 'kernels_ext_built' in m:
        parts.append('`kernels._C` built' if m['kernels_ext_built'] else '`kernels._C` not built')
    for device, probe in (m.get('memory_bandwidth') or {}).items():
        parts.append(
            f'streaming bandwidth {device}: copy {probe["copy_gbps"]:.1f}, triad {probe["triad_gbps"]:.1f} GB/s'
        )
    line = 'Machine: ' + '; '.join(parts) + '.'
    if m.get('quick'):
        line += ' **Quick (smoke) run: few rounds, not comparable.**'
    return line


def _percent(text: Any) -> float | None:
    """``'134%'`` -> 134.0; anything else -> None."""
    match = re.fullmatch(r'\s*([0-9]+(?:\.[0-9]*)?)\s*%\s*', str(text))
    return float(match.group(1)) if match else None


def _is_bandwidth_key(key: str) -> bool:
    return bool(re.search(r'bandwidth|\bBW\b', key, re.IGNORECASE))


def _bandwidth_pct(b: dict[str, Any], machine: dict[str, Any]) -> float | None:
    """The benchmark's median GB/s as % of its device's probed streaming bandwidth."""
    extra = b.get('extra_info', {})
    moved = extra.get('bytes_moved')
    stream = _stream_gbps(machine, str(extra.get('device', 'cpu')))
    if not moved or not stream or not b['stats'].get('median'):
        return None
    return 100 * moved / b['stats']['median'] / 1e9 / stream


def over_bandwidth(data: dict[str, Any], suite: str | None = None) -> list[tuple[str, str, str, float]]:
    """(group, provider, column, percent) of every bandwidth figure above 100 %."""
    machine = data.get('machine_info', {})
    groups: dict[str, list[dict[str, Any]]] = {}
    for b in data.get('benchmarks') or []:
        groups.setdefault(b.get('group') or suite or '', []).append(b)
    found = []
    for group, rows in groups.items():
        for b, label in zip(rows, _label_rows(rows)):
            pct = _bandwidth_pct(b, machine)
            if pct is not None and pct > 100:
                found.append((group, label, '% of streaming BW', pct))
            for key, value in b.get('extra_info', {}).get('report', {}).items():
                shown = _percent(value)
                if _is_bandwidth_key(key) and shown is not None and shown > 100:
                    found.append((group, label, key, shown))
    return found


def _label_rows(rows: list[dict[str, Any]]) -> list[str]:
    labels = [str((b.get('params') or {}).get('provider') or b.get('param') or b['name']) for b in rows]
    if len(set(labels)) < len(labels):  # e.g. another parameter shares the group
        labels = [str(b.get('param') or b['name']) for b in rows]
    return labels


def render_group(group: str, rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    """A markdown table for one benchmark group, fastest median first."""
    rows = sorted(rows, key=lambda b: b['stats']['median'])
    labels = dict(zip((id(b) for b in rows), _label_rows(rows)))
    fastest = rows[0]['stats']['median']
    peers = {b.get('extra_info', {}).get('peer') for b in rows} - {None}
    peer_median = {
        p: next((b['stats']['median'] for b in rows if labels[id(b)] == p), None) for p in peers
    }
    units = {
        b['extra_info']['item_unit']
        for b in rows
        if 'items' in b.get('extra_info', {}) and 'item_unit' in b['extra_info']
    }
    has_items = any('items' in b.get('extra_info', {}) for b in rows)
    has_bytes = any('bytes_moved' in b.get('extra_info', {}) for b in rows)
    report_keys: list[str] = []
    for b in rows:
        report_keys += [
            k for k in b.get('extra_info', {}).get('report', {}) if k not in report_keys
        ]

    head = ['provider', 'median', 'min', 'rounds', 'vs fastest']
    if peers:
        head.append(f'vs `{next(iter(peers))}`' if len(peers) == 1 else 'vs peer')
    if has_items:
        head.append(f'per {next(iter(units))}' if len(units) == 1 else 'per item')
    if has_bytes:
        head += ['GB/s', '% of streaming BW']
    head += report_keys
    lines = [f'**{group}**', '', '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    flagged = False
    for b in rows:
        s, extra = b['stats'], b.get('extra_info', {})
        median = format_time(s['median'])
        cells = [
            f'`{labels[id(b)]}`',
            f'**{median}**' if s['median'] == fastest else median,
            format_time(s['min']),
            str(s['rounds']),
            _ratio(s['median'], fastest),
        ]
        if peers:
            base = peer_median.get(extra.get('peer'))
            cells.append(_ratio(s['median'], base) if base else MISSING)
        if has_items:
            cells.append(
                format_time(s['median'] / extra['items']) if extra.get('items') else MISSING
            )
        if has_bytes:
            moved = extra.get('bytes_moved')
            gbps = moved / s['median'] / 1e9 if moved else None
            pct = _bandwidth_pct(b, machine)
            cells.append(f'{gbps:.1f}' if gbps else MISSING)
            cells.append(MISSING if pct is None else f'{pct:.0f}%' + (f' {OVER_MARK}' if pct > 100 else ''))
            flagged = flagged or (pct is not None and pct > 100)
        for k in report_keys:
            value = str(extra.get('report', {}).get(k, MISSING))
            over = _is_bandwidth_key(k) and (_percent(value) or 0) > 100
            cells.append(f'{value} {OVER_MARK}' if over else value)
            flagged = flagged or over
        lines.append('| ' + ' | '.join(cells) + ' |')
    if flagged:
        lines += ['', OVER_NOTE]
    if machine.get('quick'):
        lines += ['', QUICK_TABLE_NOTE]
    return '\n'.join(lines)


def render_section(suite: str, data: dict[str, Any], json_path: str) -> str:
    """The generated markdown for one suite (without the markers)."""
    benchmarks = data.get('benchmarks') or []
    if not benchmarks:
        raise BenchError(f'{json_path}: holds no benchmarks')
    source = benchmarks[0]['fullname'].split('::', 1)[0]
    when = data.get('datetime', '')[:16].replace('T', ' ')
    groups: dict[str, list[dict[str, Any]]] = {}
    for b in benchmarks:
        groups.setdefault(b.get('group') or suite, []).append(b)
    out = [
        f'### `{suite}` (generated by `algoperf bench`)',
        '',
        f'`{source}`, {when} UTC. JSON: `{json_path}`. Times are per round; ratios divide medians.',
        machine_line(data),
    ]
    if data.get('machine_info', {}).get('quick'):
        out[1:1] = [QUICK_BANNER, '']
    for group, rows in groups.items():
        out += ['', render_group(group, rows, data.get('machine_info', {}))]
    return '\n'.join(out)


def markers(suite: str) -> tuple[str, str]:
    """The begin and end markers of a suite's generated section in RESULTS.md."""
    return f'<!-- bench:{suite}:begin -->', f'<!-- bench:{suite}:end -->'


def merge_section(text: str, suite: str, section: str) -> str:
    """``text`` with the suite's marked section replaced, or appended when absent.

    Raises:
        BenchError: the markers are unpaired, repeated or out of order.
    """
    begin, end = markers(suite)
    block = f'{begin}\n{section.rstrip()}\n{end}'
    n_begin, n_end = text.count(begin), text.count(end)
    if n_begin == n_end == 0:
        return text.rstrip('\n') + '\n\n' + block + '\n'
    if n_begin != 1 or n_end != 1 or text.index(begin) > text.index(end):
        raise BenchError(
            f'markers of suite {suite!r} are unpaired, repeated or out of order; '
            f'fix them by hand ({begin} ... {end})'
        )
    return text[: text.index(begin)] + block + text[text.index(end) + len(end) :]


def update_results_md(root: str, suite: str, data: dict[str, Any], json_path: str) -> str:
    """Regenerates the suite's section of ``<root>/benchmarks/RESULTS.md``; returns its path."""
    path = os.path.join(root, RESULTS_MD)
    text = '# Benchmark results\n'
    if os.path.exists(path):
        with open(path, encoding='utf-8') as f:
            text = f.read()
    merged = merge_section(text, suite, render_section(suite, data, json_path))
    with open(path, 'w', encoding='utf-8') as f:
        f.write(merged)
    return path


def _load(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise BenchError(f'{path}: cannot read benchmark JSON ({e})') from None


def _display_path(path: str, root: str) -> str:
    rel = os.path.relpath(os.path.abspath(path), root)
    return rel if not rel.startswith('..') else os.path.abspath(path)


# ---- running -----------------------------------------------------------------------------------
def run_suite(root: str, relpath: str, json_path: str, quick: bool) -> int:
    """``python -m pytest <relpath> --benchmark-json=<json_path>`` from ``root``; its exit code."""
    env = dict(os.environ)
    if quick:
        env[QUICK_ENV] = '1'
    cmd = [
        sys.executable,
        '-m',
        'pytest',
        relpath,
        f'--benchmark-json={json_path}',
        '-q',
        '--benchmark-columns=min,median,max,rounds',
    ]
    print(f'algoperf bench: {" ".join(cmd[1:])}', flush=True)
    return subprocess.run(cmd, cwd=root, env=env, check=False).returncode


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='algoperf bench', description=__doc__.split('\n\n')[0])
    p.add_argument(
        '--suite', action='append', metavar='S', help='Suite to run (repeatable); default: all.'
    )
    p.add_argument('--list', action='store_true', help='List the suites and exit.')
    p.add_argument(
        '--quick',
        action='store_true',
        help='Smoke run: 2 rounds, JSON to a temp dir, print the section, RESULTS.md untouched.',
    )
    p.add_argument(
        '--no-update', action='store_true', help='Write the JSON but leave RESULTS.md untouched.'
    )
    p.add_argument(
        '--from-json',
        action='append',
        metavar='FILE',
        help='Render an existing pytest-benchmark JSON (repeatable); runs nothing.',
    )
    p.add_argument(
        '--repo', metavar='DIR', help='Checkout root (default: found from the working directory).'
    )
    p.add_argument('--tag', help='Host tag in JSON names (default: cpu<cores> or <gpu>x<count>).')
    return p


def _warn_terminal(suite: str, data: dict[str, Any]) -> None:
    """The not-for-claims and above-100 % lines on the terminal (stderr)."""
    if data.get('machine_info', {}).get('quick'):
        print(f'algoperf bench: {suite}: quick (smoke) run: these numbers are NOT for claims.', file=sys.stderr)
    for group, label, column, pct in over_bandwidth(data, suite):
        print(f'algoperf bench: {suite}: {group} `{label}`: {column} {pct:.0f}% is above 100 % of the measured '
              'streaming bandwidth; not a real figure (check bytes_moved, cache residency or the probe).',
              file=sys.stderr)


def _render_or_update(root: str, data: dict[str, Any], json_path: str, update: bool) -> None:
    suite, shown = suite_of(data), _display_path(json_path, root)
    _warn_terminal(suite, data)
    if update:
        path = update_results_md(root, suite, data, shown)
        print(
            f'algoperf bench: {suite}: section updated in {_display_path(path, root)} (JSON {shown})'
        )
    else:
        print(render_section(suite, data, shown) + '\n')


def _main(args: argparse.Namespace) -> int:
    root = find_repo(args.repo)
    if args.from_json:
        for path in args.from_json:
            _render_or_update(root, _load(path), path, update=not args.no_update)
        return 0
    suites = discover_suites(root)
    if args.list:
        for name, rel in suites.items():
            print(f'{name:<28}{rel}')
        return 0
    unknown = [s for s in args.suite or [] if s not in suites]
    if unknown:
        raise BenchError(
            f'unknown suite {", ".join(map(repr, unknown))}; known: {", ".join(suites)}'
        )
    if args.quick:
        print('algoperf bench: --quick: smoke run (few rounds, short bandwidth probe); its tables are NOT for '
              'claims and RESULTS.md is left alone.', flush=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime('%Y%m%d')
    tag = args.tag or host_tag()
    out_dir = (
        tempfile.mkdtemp(prefix='algoperf-bench-')
        if args.quick
        else os.path.join(root, RESULTS_DIR)
    )
    os.makedirs(out_dir, exist_ok=True)
    failed = []
    for name in args.suite or list(suites):
        json_path = os.path.join(out_dir, f'{name}_{tag}_{stamp}.json')
        code = run_suite(root, suites[name], json_path, args.quick)
        if code != 0 or not os.path.exists(json_path):
            print(
                f'algoperf bench: {name}: pytest exited {code}; RESULTS.md not updated for it',
                file=sys.stderr,
            )
            failed.append(name)
            continue
        _render_or_update(
            root, _load(json_path), json_path, update=not (args.quick or args.no_update)
        )
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``algoperf bench``.

    Args:
        argv: arguments after ``bench`` (default ``sys.argv[1:]``).

    Returns:
        0 on success, 1 when a suite's pytest run failed, 2 on a user error (one line on
        stderr: unknown suite, no checkout, unreadable JSON, broken markers).
    """
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return _main(args)
    except BenchError as e:
        print(f'algoperf bench: error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
