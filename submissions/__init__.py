"""Reference training algorithms (AlgoPerf submissions) and reusable optimizers."""
