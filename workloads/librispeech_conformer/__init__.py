"""LibriSpeech Conformer workload and its variants (metadata in `spec.py`)."""
