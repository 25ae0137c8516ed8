"""NAdamW + linear warmup + cosine decay: the AlgoPerf v0.6 baseline."""
