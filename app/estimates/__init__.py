"""Estimates: resolve model and dataset, price against the effective catalog, store."""
