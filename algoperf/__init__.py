"""AlgoPerf, fast and PyTorch-native: the contract (spec) and the harness.

Importing this package has no side effects: no torch, CUDA, environment,
logging configuration or file access happens until a function is called.
"""

__version__ = '0.1.0'
