"""LibriSpeech DeepSpeech workload and its variants (metadata in `spec.py`)."""
