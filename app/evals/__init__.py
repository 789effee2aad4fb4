"""Eval curves: the held-out set every job is scored on, per-item losses and their statistics."""
