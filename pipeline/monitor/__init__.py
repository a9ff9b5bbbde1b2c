"""Watching a run (docs/monitoring.md): train metrics and the per-rank spread (meter.py),
where they go (tracker.py: metrics.jsonl, W&B; history.py: each step once across
restarts), alerts.py, the console line (progress.py), what a start records
(run_info.py), sample grids (samples.py), the upload of a run folder to W&B (upload.py)
and the local report (report.py, plots.py)."""
