"""Hardening tests use the shared fixtures of tests/conftest.py (isolated_db among them)."""
