"""Validation before deployment: the ML testing pyramid as one gate.

A **promotion policy** (:mod:`.policy`) declares the gates; :func:`.pipeline.validate` runs the
stages (contract, quality, integration, performance, shadow) and returns a
:class:`.checks.Report`; :mod:`.reports` stores it on the version and reads it back
(:func:`.reports.latest_report`).
"""
