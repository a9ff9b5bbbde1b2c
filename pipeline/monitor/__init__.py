"""Watching a run: train metrics between log points (meter.py) and where they go,
metrics.jsonl and Weights & Biases (tracker.py)."""
