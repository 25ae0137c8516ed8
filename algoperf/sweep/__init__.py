"""Whole studies: a grid of trials expanded with upstream's semantics, run locally or on SLURM."""
