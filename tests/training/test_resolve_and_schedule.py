"""Derived values (global batch, scaled lr, steps) and the lr at chosen steps."""

from __future__ import annotations

import math

import pytest

from pipeline.config import load_config
from pipeline.resolve import resolve
from pipeline.training.schedule import lr_at

IMAGENET = 1_281_167


def config(*overrides: str):
    return load_config(None, ["data.shards=/data/shards", *overrides])


@pytest.mark.parametrize("world, batch, accumulation, global_batch, lr, steps", [
    (1, 256, 1, 256, 0.1, 5004),
    (2, 128, 1, 256, 0.1, 5004),
    (64, 128, 1, 8192, 3.2, 156),
    (64, 128, 2, 16384, 6.4, 78),
])
def test_global_batch_and_linear_scaling(world, batch, accumulation, global_batch, lr, steps):
    run = resolve(config(f"data.batch_size={batch}", f"optim.accumulation={accumulation}"),
                  world, IMAGENET, ranks_per_node=8 if world >= 8 else world)
    assert run.global_batch == global_batch
    assert run.lr == pytest.approx(lr)
    assert run.steps_per_epoch == steps
    assert run.total_steps == 90 * steps and run.warmup_steps == 5 * steps
    assert run.samples_per_epoch == steps * global_batch <= IMAGENET


def test_sqrt_scaling_and_bn_groups():
    run = resolve(config("data.batch_size=128", "optim.scaling=sqrt", "model.sync_bn=node"),
                  64, IMAGENET, ranks_per_node=8)
    assert run.lr == pytest.approx(0.1 * math.sqrt(8192 / 256))
    assert (run.bn_group, run.bn_batch) == (8, 1024)
    assert resolve(config("model.sync_bn=4"), 64, IMAGENET, 8).bn_group == 4


def test_too_little_data_for_the_accumulation_is_an_error():
    with pytest.raises(ValueError, match="optim.accumulation"):
        resolve(config("data.batch_size=100", "optim.accumulation=8"), 2, 1000)


def schedule_run(*overrides: str):
    # 10 steps per epoch, 100 steps, 20 warmup steps, peak lr 0.4
    cfg = config("data.batch_size=256", "optim.base_lr=0.4", "schedule.epochs=10",
                 "schedule.warmup_epochs=2", *overrides)
    return cfg.schedule, resolve(cfg, 1, 2560 + 100)


def test_warmup_is_linear_from_warmup_start():
    cfg, run = schedule_run("schedule.warmup_start=0.1", "schedule.decay=constant")
    assert (run.steps_per_epoch, run.total_steps, run.warmup_steps) == (10, 100, 20)
    for step in (0, 5, 19):
        assert lr_at(step, cfg, run) == pytest.approx(0.4 * (0.1 + 0.9 * step / 20))
    assert lr_at(20, cfg, run) == lr_at(99, cfg, run) == pytest.approx(0.4)


def test_cosine_decay():
    cfg, run = schedule_run("schedule.decay=cosine", "schedule.final_fraction=0.01")
    for step in (20, 50, 80, 100):
        progress = (step - 20) / 80
        expected = 0.4 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))
        assert lr_at(step, cfg, run) == pytest.approx(expected)


@pytest.mark.parametrize("staircase", [False, True])
def test_exponential_decay_counts_from_the_end_of_warmup(staircase):
    cfg, run = schedule_run("schedule.decay=exponential", "schedule.exp_rate=0.94",
                            "schedule.exp_every_epochs=2", f"schedule.exp_staircase={staircase}")
    for step in (20, 35, 40, 75):
        periods = (step - 20) / 20
        periods = math.floor(periods) if staircase else periods
        assert lr_at(step, cfg, run) == pytest.approx(0.4 * 0.94 ** periods)


def test_step_decay_at_milestone_epochs():
    cfg, run = schedule_run("schedule.decay=step", "schedule.milestones=[3,6]",
                            "schedule.step_gamma=0.1")
    expected = {20: 0.4, 29: 0.4, 30: 0.04, 59: 0.04, 60: 0.004, 99: 0.004}
    assert {s: pytest.approx(lr) for s, lr in expected.items()} == {
        s: lr_at(s, cfg, run) for s in expected}


@pytest.mark.parametrize("overrides, named", [
    (("data.dtype=bfloat16", "precision.autocast=float32"), "data.dtype = bfloat16 with "
     "precision.autocast = float32"),
    (("data.dtype=float16", "precision.autocast=bfloat16"), "set data.dtype to float32 or "
     "to bfloat16"),
    (("dist.zero_stage=1",), "dist.zero_stage = 1 needs dist.engine = deepspeed"),
])
def test_sections_that_cannot_work_together_are_refused_naming_both(overrides, named):
    with pytest.raises(ValueError, match=named):
        resolve(config(*overrides), 8, IMAGENET, 8)


def test_the_memory_format_and_epochs_of_a_step_are_decided_once():
    ddp = resolve(config("data.channels_last=true"), 8, IMAGENET, 8)
    deepspeed = resolve(config("data.channels_last=true", "dist.engine=deepspeed",
                               "dist.zero_stage=2"), 8, IMAGENET, 8)
    assert (ddp.channels_last, deepspeed.channels_last) == (True, False)
    assert deepspeed.engine.zero_stage == 2 and deepspeed.engine.autocast == "bfloat16"
    run = resolve(config("data.batch_size=100", "optim.accumulation=2"), 2, 1000)
    assert (run.batches_per_epoch, run.steps_per_epoch) == (5, 2)  # micro-batches vs steps
    assert [run.epoch_of(s) for s in (0, 1, 2, 3, 4)] == [0, 0, 1, 1, 2]
    assert [run.is_epoch_end(s) for s in (0, 1, 2, 4)] == [False, False, True, True]
    assert run.epochs_done(3) == 1.5


def test_more_precise_bn_batches_than_an_epoch_has_are_cut_with_a_warning():
    run = resolve(config("data.batch_size=100", "eval.precise_bn_batches=50"), 2, 1000)
    assert run.precise_bn_batches == 5
    assert run.warnings == ("eval.precise_bn_batches = 50, but an epoch has 5 batches per "
                            "rank: precise BN uses 5",)
    assert resolve(config("data.batch_size=100", "eval.precise_bn_batches=5"), 2,
                   1000).warnings == ()
