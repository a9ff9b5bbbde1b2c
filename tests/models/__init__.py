"""Tests of pipeline.models (a package so that tests/ is importable: distributed_helpers)."""
