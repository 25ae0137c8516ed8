"""WMT Transformer workload and its variants (metadata in `spec.py`)."""
