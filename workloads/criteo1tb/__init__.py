"""Criteo 1TB DLRM-small workload and its variants (metadata in `spec.py`)."""
