"""AlgoPerf workloads. Nothing is imported here: the registry loads each by name."""
