"""The monitor's pure parts: alert rules, metrics.jsonl rewind, the progress line's
durations, the sample grid's de-normalization."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.config import DataConfig, LogConfig
from pipeline.monitor.alerts import AlertRules
from pipeline.monitor.history import DROPPED, Logged, read_rows, rewind
from pipeline.monitor.meter import RankSpread
from pipeline.monitor.progress import duration
from pipeline.monitor.samples import grid_array


def _record(step, images_per_s=1000.0):
    return {"step": step, "images_per_s": images_per_s, "ranks/slowest": 3,
            "ranks/slowest_host": "node7"}


EVEN = RankSpread([0.1] * 4, [0.001] * 4)


def test_throughput_alert_after_five_intervals_below_half_the_running_median():
    rules = AlertRules(LogConfig())
    # the first interval (start-up) is left out; then 5 of history before judging
    speeds = [50, 1000, 1000, 1000, 1000, 400, 499]
    fired = [rules.check(_record(i, s), EVEN) for i, s in enumerate(speeds)]
    assert [len(a) for a in fired] == [0, 0, 0, 0, 0, 0, 1]
    assert "499 img/s, below 0.5 x this session's median 1,000" in fired[-1][0].text
    assert "rank 3 on node7" in fired[-1][0].text
    assert AlertRules(LogConfig(alert_throughput_fraction=0)).check(_record(9, 1), EVEN) == []


def test_a_stalled_rank_alerts_after_m_intervals_in_a_row_even_on_two_ranks():
    rules = AlertRules(LogConfig(alert_data_wait_intervals=2))
    stalled = RankSpread([0.3, 0.3], [0.001, 0.25])
    assert rules.check(_record(1), stalled) == []
    [alert] = rules.check(_record(2), stalled)
    assert "rank 1 on node7 waited 0.25 s" in alert.text and "2 log intervals" in alert.text
    assert rules.check(_record(3), EVEN) == []  # a normal interval resets the count
    assert rules.check(_record(4), stalled) == []
    # a wait below 5% of the step is no stall, whatever the ratio
    tiny = RankSpread([1.0, 1.0], [0.0001, 0.04])
    assert AlertRules(LogConfig(alert_data_wait_intervals=1)).check(_record(5), tiny) == []


def _write(path, rows, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def _rows(kind, *points):
    key = "val/top1" if kind == "val" else "train/loss"
    return [{"step": step, "images_seen": images, key: 1.0} for step, images in points]


def test_rewind_moves_rows_past_the_checkpoint_aside_and_reports_what_was_logged(tmp_path):
    path = tmp_path / "metrics.jsonl"
    train = _rows("train", (5, 80), (10, 160), (15, 240), (20, 320))
    val = _rows("val", (10, 160), (20, 320))
    _write(path, [train[0], train[1], val[0], train[2], train[3], val[1]], '{"step": 2')
    logged = rewind(path, images_seen=240, validated=False)  # the checkpoint at step 15
    assert logged == Logged(train=320, val=320)
    assert read_rows(path) == [train[0], train[1], val[0], train[2]]
    assert read_rows(tmp_path / DROPPED) == [train[3], val[1]]
    assert logged.has(train[3]) and not logged.has(_rows("train", (25, 400))[0])
    assert rewind(tmp_path / "none.jsonl", 0, True) == Logged()


def test_rewind_keeps_the_val_row_at_the_checkpoint_only_if_it_was_validated(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [*_rows("train", (25, 400)), *_rows("val", (25, 400))]
    _write(path, rows)
    rewind(path, 400, validated=True)
    assert read_rows(path) == rows
    rewind(path, 400, validated=False)  # saved before its evaluation, which is redone
    assert read_rows(path) == rows[:1]


def test_rewind_after_a_resume_on_another_world_size_cuts_by_images_not_steps(tmp_path):
    """1 rank to step 38 (608 images), then 2 ranks renumbered from step 12; a crash of
    the 2-rank run after its checkpoint at step 16 (736 images)."""
    path = tmp_path / "metrics.jsonl"
    old = _rows("train", (25, 400), (38, 608))
    new = _rows("train", (16, 736), (20, 864))
    _write(path, old + new)
    assert rewind(path, 736, validated=False) == Logged(train=864, val=-1)
    assert read_rows(path) == old + new[:1]


def test_a_malformed_middle_row_names_the_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 5}\nnot json\n{"step": 10}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON row"):
        read_rows(path)


@pytest.mark.parametrize(("seconds", "text"), [(41.4, "41s"), (133, "2m13s"),
                                                (11880, "3h18m"), (0, "0s")])
def test_durations_read_as_a_person_writes_them(seconds, text):
    assert duration(seconds) == text


def test_the_sample_grid_undoes_the_normalization_exactly():
    cfg = DataConfig()
    pixels = torch.randint(0, 256, (5, 3, 8, 6)).float()
    mean, std = torch.tensor(cfg.mean).view(1, 3, 1, 1), torch.tensor(cfg.std).view(1, 3, 1, 1)
    grid = grid_array((pixels / 255 - mean) / std, cfg)
    assert grid.shape == (2 * 8 + 2, 4 * 6 + 3 * 2, 3)  # 2 rows of 4 columns, 2-pixel gaps
    second_row_first = grid[10:18, 0:6]
    assert (second_row_first == pixels[4].permute(1, 2, 0).numpy()).all()
    assert (grid[8:10] == 255).all() and (grid[10:, 8:] == 255).all()  # gaps, empty cells
