"""MNIST development workload (upstream's MLP, targets and budgets)."""
