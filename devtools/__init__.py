"""Developer tools kept out of the service: the tiny offline model and dataset, and `make demo`.

The service (`app`) never imports this package; the `tunecost` CLI alone registers its commands
(`make-tiny-model`, `make-tiny-dataset`), which `tests/test_layers.py` checks.
"""
