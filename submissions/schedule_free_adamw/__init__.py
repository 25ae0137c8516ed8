"""Schedule-Free AdamW: the AlgoPerf v0.5 self-tuning winner, on our fused optimizer."""
