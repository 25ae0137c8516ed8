"""Append-only CSV files with upstream AlgoPerf's layout.

Upstream rewrites the whole CSV through pandas for every row (read, concat,
write), which costs O(rows) per step on the clock and can corrupt the file if
the process dies mid-write. Here a row is one appended, flushed line. The file
is rewritten (atomically: temp file + rename) only when a row brings a column
the header lacks, which happens a handful of times per trial.

Layout rules kept from upstream (spec §5.7): the first header is the first
row's keys sorted alphabetically; later new columns are appended in the order
they appear (pandas `concat`); missing values are empty; floats are written as
`repr` (what pandas writes), ints as ints, no index column, '\\n' line ends.
"""

from __future__ import annotations

import csv
import io
import math
import numbers
import os
from typing import Any, Callable, Dict, List, Optional


def format_value(value: Any) -> str:
    """One CSV cell, formatted as pandas would write it."""
    if value is None:
        return ''
    if hasattr(value, 'item') and callable(value.item):  # torch / numpy scalars
        value = value.item()
    if isinstance(value, bool):
        return 'True' if value else 'False'
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        return '' if math.isnan(value) else repr(value)
    return str(value)


def _encode(cells: List[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator='\n').writerow(cells)
    return buf.getvalue()


class CsvLog:
    """One CSV file, appended row by row.

    Args:
      path: file to append to (created on the first row).
      durable: fsync after every row (eval rows: cheap, they are rare).
    """

    def __init__(self, path: str, durable: bool = False) -> None:
        self.path = path
        self.durable = durable
        self.columns: Optional[List[str]] = None
        if os.path.exists(path):
            self._repair_and_read_header()

    def _repair_and_read_header(self) -> None:
        # A process killed mid-append leaves a partial last line: drop it.
        with open(self.path, 'rb+') as f:
            data = f.read()
            if data and not data.endswith(b'\n'):
                f.truncate(data.rfind(b'\n') + 1)
        with open(self.path, newline='') as f:
            header = next(csv.reader(f), None)
        self.columns = header or None

    def rows(self) -> List[Dict[str, str]]:
        """All rows as dicts of strings (empty cells are '')."""
        if not os.path.exists(self.path):
            return []
        with open(self.path, newline='') as f:
            return list(csv.DictReader(f))

    def append(self, row: Dict[str, Any]) -> None:
        """Append one row; widen the header (atomic rewrite) if needed."""
        if self.columns is None:
            self.columns = sorted(row)
            self._rewrite([row])
            return
        new = [k for k in row if k not in self.columns]
        if new:
            old_rows = self.rows()
            self.columns = self.columns + new
            self._rewrite(old_rows + [row])
            return
        line = _encode([format_value(row.get(c)) for c in self.columns])
        with open(self.path, 'a', newline='') as f:
            f.write(line)
            f.flush()
            if self.durable:
                os.fsync(f.fileno())

    def truncate(self, keep: Callable[[Dict[str, str]], bool]) -> int:
        """Keep only rows for which `keep(row)` is true (resume); returns rows dropped."""
        rows = self.rows()
        kept = [r for r in rows if keep(r)]
        if len(kept) != len(rows):
            self._rewrite(kept)
        return len(rows) - len(kept)

    def _rewrite(self, rows: List[Dict[str, Any]]) -> None:
        tmp = f'{self.path}.tmp.{os.getpid()}'
        with open(tmp, 'w', newline='') as f:
            f.write(_encode(self.columns))
            for r in rows:
                # Rows read back from the file are strings already: keep them verbatim.
                f.write(_encode([r[c] if isinstance(r.get(c), str) else format_value(r.get(c))
                                 for c in self.columns]))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
