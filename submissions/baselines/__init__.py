"""AlgoPerf baseline submissions."""
