"""Tests of pipeline.monitor and the report (pipeline/report.py)."""
