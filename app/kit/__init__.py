"""Cross-cutting helpers every domain package may use: time, CSV, pagination, streams, queue.

The kit sits below every domain package (see CONTRIBUTING.md, "Package order"): it imports
nothing of app/ but `config`, `errors` and `db`.
"""
