"""Reusable torch.optim optimizers, each with a plain reference twin."""
