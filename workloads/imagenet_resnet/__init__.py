"""ImageNet ResNet-50 workload and its variants (metadata in `spec.py`)."""
