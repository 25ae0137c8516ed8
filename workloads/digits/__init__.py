"""Handwritten digits bundled with scikit-learn: an offline dev workload."""
