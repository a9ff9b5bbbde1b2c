"""Tests of pipeline.paper (the BN paper's experiments at small scale)."""
