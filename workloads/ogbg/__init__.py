"""OGBG molpcba GNN workload and its variants (metadata in `spec.py`)."""
