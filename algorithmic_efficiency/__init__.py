"""Upstream's pre-v0.6 package name, kept so v0.5 submissions run unchanged.

`import algorithmic_efficiency.X` gives algoperf's module X itself (see algoperf/upstream_alias.py
for the mapping, including `algorithmic_efficiency.workloads.*`). This shim installing its import
finder is the one deliberate import side effect (upstream-compatible shims are the exception).
"""

from algoperf import upstream_alias as _upstream_alias

_upstream_alias.install()
