"""Prometheus metrics, drift statistics, live windows, alert rules, reports."""
