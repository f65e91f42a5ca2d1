"""Runtimes: one module per model format behind the small protocol in ``base.py``."""
