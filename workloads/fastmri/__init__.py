"""fastMRI U-Net workload and its variants (metadata in `spec.py`)."""
