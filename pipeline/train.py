"""Trains BN-Inception on the shards: one process, under torchrun, or under srun.

    python -m pipeline.train --config configs/bn_inception.yaml data.shards=/data/shards
    torchrun --nproc-per-node 8 -m pipeline.train --config configs/bn_inception.yaml \\
        data.shards=/data/shards dist.engine=deepspeed
    srun --ntasks-per-node 8 python -m pipeline.train --config ... name=bn_inception_64

`--describe` lists every config key with its default and help. The run writes to
runs/<name>/ (config.yaml, derived.json, metrics.jsonl, checkpoints/, logs/), resumes
from its newest valid checkpoint when started again, and on SIGUSR1/SIGTERM saves a
checkpoint on every rank and exits with 75 for the launcher to requeue.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace

import torch
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from pipeline.checkpoint import Checkpointer, CheckpointError, TrainState
from pipeline.config import Config, ModelConfig, describe_tree, load_config, to_yaml
from pipeline.data import ShardError, build_train_loader, build_val_loader
from pipeline.data.epochs import derive_seed
from pipeline.dist import DistEnv, init_distributed, shutdown
from pipeline.engines import AMP_DTYPES, build_engine
from pipeline.evaluate import correct_at, evaluate, recompute_bn_statistics
from pipeline.metrics import StepMeter
from pipeline.models import create_model
from pipeline.models.syncbn import build_sync_group, convert_sync_batchnorm
from pipeline.optim import set_lr
from pipeline.preemption import REQUEUE_EXIT_CODE, NonFiniteLoss, StopAgreement
from pipeline.resolve import resolve
from pipeline.rundir import prepare_run_dir, record_derived
from pipeline.schedule import lr_at
from pipeline.tracking import Tracker

log = logging.getLogger("pipeline.train")


class Trainer:
    def __init__(self, cfg: Config, env: DistEnv):
        self.cfg, self.env = cfg, env
        self.run_dir = prepare_run_dir(cfg, env)
        seed_everything(cfg)
        self.train_loader = build_train_loader(cfg.data, env.rank, env.world_size, env.device)
        self.val_loader = build_val_loader(cfg.data, env.rank, env.world_size, env.device)
        self.run = resolve(cfg, env.world_size, self.train_loader.split.num_samples,
                           env.gpus_per_node)
        record_derived(self.run_dir, self.run, env)
        model = build_model(cfg.model, self.train_loader.split.num_classes,
                            cfg.data.channels_last, env)
        torch.manual_seed(derive_seed(cfg.seed, 1, env.rank))  # dropout differs per rank
        self.engine = build_engine(model, cfg, self.run, env)
        self.amp_dtype = AMP_DTYPES[cfg.precision.autocast]
        self.checkpoints = Checkpointer(self.run_dir, cfg.checkpoint, env)
        self.state = self.resume()
        self.tracker = Tracker(cfg, self.run_dir, env, self.state, self.run.as_dict())
        self.stop = StopAgreement()
        self.last_checkpoint = None
        self.bn_loader = None  # precise BN's own train loader, made when first needed

    def fit(self) -> int:
        """Trains to run.total_steps; returns the process exit status."""
        try:
            return self.train_to_the_end()
        finally:
            self.tracker.close()

    def train_to_the_end(self) -> int:
        if self.evaluation_due():  # a preemption cut in between an epoch's end and its eval
            self.save(self.validate())
        while self.state.step < self.run.total_steps:
            epoch = self.state.step // self.run.steps_per_epoch
            self.train_loader.set_epoch(epoch)  # a no-op when resumed inside the epoch
            if not self.train_one_epoch(epoch):
                return REQUEUE_EXIT_CODE
            self.save(self.validate() if self.evaluation_due() else None)
        return 0

    def evaluation_due(self) -> bool:
        """At the end of every eval.every_epochs-th epoch and of training, once."""
        step, run, every = self.state.step, self.run, self.cfg.eval.every_epochs
        if step == 0 or step == self.state.validated_step:
            return False
        epoch_end = step % run.steps_per_epoch == 0
        return step == run.total_steps or (
            epoch_end and every > 0 and (step // run.steps_per_epoch) % every == 0)

    def train_one_epoch(self, epoch: int) -> bool:
        """Optimizer steps up to the end of `epoch` (or of training); False if preempted."""
        run, state, engine = self.run, self.state, self.engine
        end = min(run.total_steps, (epoch + 1) * run.steps_per_epoch)
        meter = StepMeter(self.train_loader, run)
        micro = 0
        for images, labels in self.train_loader:
            boundary = (micro + 1) % run.accumulation == 0
            if micro % run.accumulation == 0:
                set_lr(engine.optimizer, lr_at(state.step, self.cfg.schedule, run))
                step_loss = 0.0
            loss, logits = engine.forward_backward(images, labels, boundary)
            step_loss = step_loss + loss
            meter.add_batch(loss, correct_at(logits, labels, (1,))[0])
            micro += 1
            if not boundary:
                continue
            engine.step()
            state.step += 1
            verdict = self.stop.poll(state.step, step_loss)
            self.raise_if_diverged(verdict.bad_step)
            if state.step % self.cfg.log.every_steps == 0 or state.step == end:
                self.log_train(meter.flush(state.step, engine.optimizer))
            if verdict.preempted:
                log.warning("stopping at step %d: %s", state.step, self.stop.signalled)
                self.save()
                return False
            if state.step == end:  # train_to_the_end saves (and evaluates) there
                break
            every = self.cfg.checkpoint.every_steps
            if every and state.step % every == 0:
                self.save()
        return True

    def log_train(self, record: dict) -> None:
        self.tracker.log(record)
        log.info("step %d/%d (epoch %.2f): loss %.4f, top-1 %.3f, lr %.4g, %.0f img/s, "
                 "data wait %.1f%%", record["step"], self.run.total_steps, record["epoch"],
                 record["train/loss"], record["train/top1"], record["lr"],
                 record["images_per_s"], 100 * record["data_wait_fraction"])

    def validate(self) -> float:
        if self.cfg.eval.precise_bn_batches:
            recompute_bn_statistics(self.engine.module, self.precise_bn_batches(),
                                    self.cfg.eval.precise_bn_batches, self.amp_dtype)
        started = time.perf_counter()
        metrics = evaluate(self.engine.module, self.val_loader, self.amp_dtype)
        metrics["val/seconds"] = time.perf_counter() - started
        top1 = metrics["val/top1"]
        self.state.validated_step = self.state.step
        if self.state.best_top1 is None or top1 > self.state.best_top1:
            self.state.best_top1 = top1
        metrics["val/best_top1"] = self.state.best_top1
        self.tracker.log({"step": self.state.step,
                          "epoch": self.state.step / self.run.steps_per_epoch, **metrics})
        log.info("step %d: val top-1 %.4f, top-5 %.4f, loss %.4f over %d images",
                 self.state.step, top1, metrics["val/top5"], metrics["val/loss"],
                 metrics["val/images"])
        return top1

    def precise_bn_batches(self):
        """Train batches of the current epoch from a second loader (other augmentations),
        so the training loader's position is untouched."""
        if self.bn_loader is None:
            data = replace(self.cfg.data, seed=derive_seed(self.cfg.data.seed, 7))
            self.bn_loader = build_train_loader(data, self.env.rank, self.env.world_size,
                                                self.env.device)
        self.bn_loader.set_epoch(self.state.step // self.run.steps_per_epoch)
        return self.bn_loader

    def save(self, top1: float | None = None) -> None:
        self.raise_if_diverged(self.stop.settle().bad_step)  # never checkpoint a NaN
        extra = {"config": to_yaml(self.cfg), "derived": self.run.as_dict()}
        self.last_checkpoint = self.checkpoints.save(self.engine, self.train_loader,
                                                     self.state, extra, top1)
        log.info("checkpoint %s", self.last_checkpoint)

    def resume(self) -> TrainState:
        folder = self.checkpoints.find_resume()
        if folder is None:
            log.info("starting from scratch")
            return TrainState()
        trainer = self.checkpoints.load(folder, self.engine, self.train_loader)
        state = TrainState(**trainer["state"])
        log.info("resumed from %s at step %d", folder, state.step)
        return state

    def raise_if_diverged(self, bad_step: int | None) -> None:
        if bad_step is None:
            return
        found = self.last_checkpoint or self.checkpoints.find_resume()
        raise NonFiniteLoss(f"the loss was NaN or Inf at step {bad_step}; the last good "
                            f"checkpoint is {found or 'none (no checkpoint yet)'}. Lower "
                            "optim.base_lr or lengthen the warmup, then resume from it")


def build_model(cfg: ModelConfig, num_classes: int, channels_last: bool,
                env: DistEnv) -> nn.Module:
    """The network on its device and memory format, with BN synchronized over its group."""
    if cfg.num_classes and cfg.num_classes != num_classes:
        raise ValueError(f"model.num_classes = {cfg.num_classes}, but the shards' "
                         f"classes.json has {num_classes} classes")
    model = create_model(cfg.name, num_classes=num_classes, bn=cfg.bn, act=cfg.act,
                         dropout=cfg.dropout, bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum,
                         separable_stem=cfg.separable_stem)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(env.device, memory_format=layout)
    group = build_sync_group(cfg.sync_group, env.gpus_per_node)
    return convert_sync_batchnorm(model, group)  # model.compile: the engine compiles it


def seed_everything(cfg: Config) -> None:
    """Same initial weights on every rank; deterministic kernels when asked."""
    torch.manual_seed(cfg.seed)
    if cfg.precision.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--config", help="recipe YAML (differences from the defaults)")
    p.add_argument("--describe", action="store_true", help="list every key and exit")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.batch_size=64")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.describe:
        print(describe_tree(Config))
        return 0
    try:
        cfg = load_config(args.config, args.overrides)
    except (ValueError, OmegaConfBaseException, OSError) as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    env = init_distributed(cfg.dist)
    try:
        status = Trainer(cfg, env).fit()
    except (NonFiniteLoss, ShardError, CheckpointError) as err:  # explained in the message
        log.error("%s: %s", type(err).__name__, err)
        return 1
    except Exception:
        log.exception("rank %d failed (a collective that fails or times out usually means "
                      "another rank died first: see every rank's log in %s/logs)",
                      env.rank, cfg.run_dir)
        return 1
    shutdown(env)
    return status


if __name__ == "__main__":
    sys.exit(main())
