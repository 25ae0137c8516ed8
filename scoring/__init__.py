"""Scoring AlgoPerf log trees: time-to-target, performance profiles, benchmark scores.

Plain numpy + pandas; matplotlib is imported only when plotting; torch is never needed.
"""
