"""`algoperf data`: prepare a workload's dataset in the layout its reader expects.

Each workload that needs a conversion names its tool in its spec (`data_tool`,
'module:function'); the tool is imported only when asked for, so the harness never
imports a workload directly. Variants share their base workload's data and tool.

    algoperf data                      # which workloads have a tool
    algoperf data ogbg --raw_dir=pcba --data_dir=/data/ogbg
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from algoperf import registry


def tools() -> dict[str, str]:
    """{base workload name: 'module:function'} for every registered data tool."""
    found = {}
    for name in registry.list_workloads():
        spec = registry.get_spec(name)
        if spec.data_tool:
            found.setdefault(spec.base_workload, spec.data_tool)
    return found


def _dataset_alias(name: str, available: dict[str, str]) -> str | None:
    """A dataset name shared by workloads with one tool ('librispeech' -> its two workloads)."""
    matches = {base: tool for base, tool in available.items() if base.startswith(name + '_')}
    if matches and len(set(matches.values())) == 1:
        return min(matches)
    return None


def _usage(available: dict[str, str]) -> str:
    lines = ['usage: algoperf data <workload> [options]   (<workload> --help for its options)', '']
    lines.append('Workloads with a data tool:')
    lines += [f'  {name:<24}{target}' for name, target in sorted(available.items())]
    return '\n'.join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    available = tools()
    if not argv or argv[0] in ('-h', '--help'):
        print(_usage(available))
        return 0 if argv else 2
    name = argv[0]
    try:
        base = registry.get_spec(name).base_workload
    except registry.UnknownWorkloadError as e:
        base = _dataset_alias(name, available)
        if base is None:
            print(f'algoperf data: error: {e}', file=sys.stderr)
            return 2
    if base not in available:
        print(
            f'algoperf data: error: {name!r} has no data tool; its reader takes the dataset as '
            'published (see the README). Workloads with one: ' + ', '.join(sorted(available)),
            file=sys.stderr,
        )
        return 2
    module_name, _, function = available[base].partition(':')
    tool = getattr(importlib.import_module(module_name), function)
    try:
        return tool(argv[1:], prog=f'algoperf data {name}')
    except (FileNotFoundError, FileExistsError, NotADirectoryError, ValueError) as e:
        print(f'algoperf data {name}: error: {e}', file=sys.stderr)
        return 2
