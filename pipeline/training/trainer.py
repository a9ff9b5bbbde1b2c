"""The training loop: epochs of optimizer steps, validation, checkpoints and resume.

    ending = Trainer(cfg, env, signals, watchdog).fit()   # "done", "preempted", "interrupted"
    trainer.last_validation                     # the last val metrics, with their step

The parts come from assembly.assemble; this module only runs them. The watchdog
(pipeline/dist/watchdog.py) hears of every step, save and validation.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from pathlib import Path

from data_prep.manifest import load_split, shards_identity
from pipeline.config import Config, to_dict, to_yaml
from pipeline.data import build_train_loader
from pipeline.data.epochs import derive_seed
from pipeline.dist.environment import node_name
from pipeline.dist.group import DistEnv
from pipeline.dist.signals import StopSignals
from pipeline.dist.watchdog import Watchdog
from pipeline.monitor.alerts import AlertRules, diverged
from pipeline.monitor.meter import StepMeter, gather_hosts
from pipeline.monitor.progress import ProgressClock
from pipeline.monitor.run_info import describe_start
from pipeline.monitor.samples import save_grid
from pipeline.monitor.tracker import Tracker
from pipeline.training.assembly import assemble
from pipeline.training.checkpoint import Checkpointer
from pipeline.training.continuity import check_continuation
from pipeline.training.optim import set_lr
from pipeline.training.preemption import NonFiniteLoss, StopAgreement
from pipeline.training.reshape import resume_point
from pipeline.training.rundir import prepare_run_dir, record_config, record_derived
from pipeline.training.schedule import lr_at
from pipeline.training.state import TrainState, new_wandb_id
from pipeline.training.validation import correct_at, evaluate, recompute_bn_statistics

log = logging.getLogger("pipeline.train")


class Trainer:
    def __init__(self, cfg: Config, env: DistEnv, signals: StopSignals, watchdog: Watchdog):
        self.cfg, self.env, self.watchdog = cfg, env, watchdog
        self.run_dir = prepare_run_dir(cfg.run_dir, env)
        self.checkpoints = Checkpointer(self.run_dir, cfg.checkpoint, env)
        saved = self.find_saved()  # before the slow build: a refused resume ends here
        self.wandb_id = (saved and saved[1]["state"].get("wandb_id")) or new_wandb_id()
        # W&B starts before the build, so a refusal is known in seconds, not minutes.
        self.tracker = Tracker(cfg.log, self.run_dir, env, cfg.name, self.wandb_id,
                               to_dict(cfg))
        try:
            self.build(saved)
        except BaseException:
            self.tracker.close()
            raise
        self.stop = StopAgreement(signals)
        self.alerts, self.clock = AlertRules(cfg.log), ProgressClock(self.run)
        self.last_checkpoint = None
        self.last_validation: dict = {}
        self.bn_loader = None  # precise BN's own train loader, made when first needed

    def build(self, saved: tuple[Path, dict] | None) -> None:
        parts = assemble(self.cfg, self.env)
        self.data, self.train_loader, self.val_loader = parts.data, parts.train, parts.val
        self.run, self.engine = parts.run, parts.engine
        self.shards = shards_identity(Path(self.data.shards))  # saved; a resume compares it
        val = load_split(Path(self.data.shards), "val").num_samples
        self.rank_images = (self.run.global_batch // self.env.world_size,  # a step's
                            math.ceil(val / self.env.world_size)  # validation's
                            + self.run.precise_bn_batches * self.run.per_gpu_batch)
        log.info("%s", self.watchdog.timeouts.describe())
        self.state = self.resume(*saved) if saved else self.start()
        if not self.complete():  # a start with nothing to do leaves the folder as it is
            record_derived(self.run_dir, self.run, self.env)  # once the resume worked
            record_config(self.run_dir, to_yaml(self.cfg), self.env)
        self.hosts = gather_hosts(self.env, node_name())
        state = self.state
        self.tracker.begin(self.run.as_dict(), state.step, state.images_seen,
                           state.validated_step == state.step, state.starts,
                           describe_start(self.env, self.hosts))

    def fit(self) -> str:
        """Trains to run.total_steps: "done", or "preempted"/"interrupted" after the save."""
        try:
            return self.train_to_the_end()
        finally:
            self.tracker.close()

    def train_to_the_end(self) -> str:
        if self.complete():
            best = self.state.best_top1
            log.warning("run %s is already complete: step %d of %d%s. Nothing to do; to train "
                        "longer raise schedule.epochs, for a new experiment give a new name=",
                        self.cfg.name, self.state.step, self.run.total_steps,
                        "" if best is None else f", best val top-1 {best:.4f}")
            return "done"
        if self.evaluation_due():  # a preemption cut in between an epoch's end and its eval
            self.save(self.validate())
        while self.state.step < self.run.total_steps:
            epoch = self.run.epoch_of(self.state.step)
            self.train_loader.set_epoch(epoch)  # a no-op when resumed inside the epoch
            if not self.train_one_epoch(epoch):
                return self.stop_ending()
            if self.stop_requested():  # in the epoch's last step: the resumed run evaluates
                self.log_stop()
                self.save()
                return self.stop_ending()
            self.save(self.validate() if self.evaluation_due() else None)
        return "done"

    def stop_requested(self) -> bool:
        """Every rank's flags up to the last step, settled: True when some rank was signalled
        (a NaN there raises)."""
        self.raise_if_diverged(self.stop.settle().bad_step)
        return self.stop.requested

    def log_stop(self) -> None:
        log.warning("stopping at step %d: %s", self.state.step, self.stop.reason)

    def stop_ending(self) -> str:
        return "interrupted" if self.stop.interrupted else "preempted"

    def complete(self) -> bool:
        """Trained to the end and evaluated there: a start has nothing to do."""
        return self.state.step >= self.run.total_steps and not self.evaluation_due()

    def evaluation_due(self) -> bool:
        """At the end of every eval.every_epochs-th epoch and of training, once."""
        step, run, every = self.state.step, self.run, self.cfg.eval.every_epochs
        if step == 0 or step == self.state.validated_step:
            return False
        return step == run.total_steps or (
            run.is_epoch_end(step) and every > 0 and run.epoch_of(step) % every == 0)

    def train_one_epoch(self, epoch: int) -> bool:
        """Optimizer steps up to the end of `epoch` (or of training); False if stopped."""
        run, state, engine = self.run, self.state, self.engine
        end = min(run.total_steps, (epoch + 1) * run.steps_per_epoch)
        whole_epoch = state.step == epoch * run.steps_per_epoch  # not resumed inside it
        meter = StepMeter(run, self.env, self.hosts, state.step)
        started, micro = time.perf_counter(), 0
        for images, labels in self.train_loader:
            if micro == 0 and whole_epoch and self.samples_due(epoch):
                self.log_samples(images)
            boundary = (micro + 1) % run.accumulation == 0
            if micro % run.accumulation == 0:
                set_lr(engine.optimizer, lr_at(state.step, self.cfg.schedule, run))
                step_loss = 0.0
            loss, logits = engine.forward_backward(images, labels, boundary)
            step_loss = step_loss + loss
            meter.add_batch(loss, correct_at(logits, labels, (1,))[0],
                            self.train_loader.last_wait_s)
            micro += 1
            if not boundary:
                continue
            log_due = (state.step + 1) % self.cfg.log.every_steps == 0 or state.step + 1 == end
            meter.add_step(engine.step(measure_norm=log_due))
            state.step += 1
            state.images_seen += run.global_batch
            self.watchdog.stepped(self.rank_images[0])
            verdict = self.stop.poll(state.step, step_loss)
            self.raise_if_diverged(verdict.bad_step)
            if log_due:
                record, spread = meter.flush(state.step, state.images_seen, engine.optimizer)
                if state.step == end and whole_epoch and run.is_epoch_end(state.step):
                    record["epoch_time_s"] = time.perf_counter() - started
                self.log_train(record, spread)
            if verdict.preempted:
                self.log_stop()
                self.save()
                return False
            if state.step == end:  # train_to_the_end saves (and evaluates) there
                break
            every = self.cfg.checkpoint.every_steps
            if every and state.step % every == 0:
                meter.exclude("checkpoint_s", self.save())
                if self.stop.requested:  # the save's settle collected a stop: act on it
                    self.log_stop()  # the checkpoint just written holds this step
                    return False
        return True

    def log_train(self, record: dict, spread) -> None:
        scale = self.engine.loss_scale()
        if scale is not None:
            record["loss_scale"] = scale
        self.tracker.log(record)
        log.info("%s", self.clock.line(record))
        for alert in self.alerts.check(record, spread):
            self.tracker.alert(alert)

    def samples_due(self, epoch: int) -> bool:
        every = self.cfg.log.samples_every_epochs
        return epoch == 0 or (every > 0 and epoch % every == 0)

    def log_samples(self, images) -> None:
        """The first batch of the epoch as the model sees it (rank 0's)."""
        if not self.env.is_main:
            return
        step = self.state.step
        path = self.run_dir / "samples" / f"step-{step:08d}.png"
        sent = path.exists()  # this epoch began before a crash: W&B has its grid
        save_grid(images, self.cfg.data, path)
        if not sent:
            self.tracker.image("samples/train", path, step, self.state.images_seen)

    def validate(self) -> float:
        with self.watchdog.phase("validation", images=self.rank_images[1]):
            return self._validate()

    def _validate(self) -> float:
        amp_dtype = self.run.autocast_dtype
        if self.run.precise_bn_batches:
            recompute_bn_statistics(self.engine.module, self.precise_bn_batches(),
                                    self.run.precise_bn_batches, amp_dtype)
            self.bn_loader.close()  # not a second DALI pipeline per GPU for the whole run
        started = time.perf_counter()
        metrics = evaluate(self.engine.module, self.val_loader, amp_dtype)
        metrics["val/seconds"] = time.perf_counter() - started
        top1 = metrics["val/top1"]
        self.state.validated_step = self.state.step
        if self.state.best_top1 is None or top1 > self.state.best_top1:
            self.state.best_top1 = top1
        metrics["val/best_top1"] = self.state.best_top1
        self.last_validation = {"step": self.state.step, **metrics}
        self.tracker.log({"step": self.state.step, "epoch": self.run.epochs_done(self.state.step),
                          "images_seen": self.state.images_seen, **metrics})
        log.info("step %d: val top-1 %.4f, top-5 %.4f, loss %.4f over %d images",
                 self.state.step, top1, metrics["val/top5"], metrics["val/loss"],
                 metrics["val/images"])
        return top1

    def precise_bn_batches(self):
        """Train batches of the current epoch from a second loader (other augmentations),
        so the training loader's position is untouched; its reader is closed after use."""
        if self.bn_loader is None:
            data = replace(self.data, seed=derive_seed(self.data.seed, 7))
            self.bn_loader = build_train_loader(data, self.env.rank, self.env.world_size,
                                                self.env.device, hash_indexes=False)
        self.bn_loader.set_epoch(self.run.epoch_of(self.state.step))
        return self.bn_loader

    def save(self, top1: float | None = None) -> float:
        """Checkpoints this step (collective); returns the seconds it took."""
        started = time.perf_counter()
        self.raise_if_diverged(self.stop.settle().bad_step)  # never checkpoint a NaN
        extra = {"config": to_yaml(self.cfg), "derived": self.run.as_dict(),
                 "shards": self.shards}
        with self.watchdog.phase("save"):
            self.last_checkpoint = self.checkpoints.save(self.engine, self.train_loader,
                                                         self.state, extra, top1)
        seconds = time.perf_counter() - started
        log.info("checkpoint %s (%.1f s)", self.last_checkpoint, seconds)
        return seconds

    def find_saved(self) -> tuple[Path, dict] | None:
        """The checkpoint to resume and its trainer.pt, if its config may continue here."""
        folder = self.checkpoints.find_resume()
        if folder is None:
            return None
        trainer = self.checkpoints.read_trainer(folder)
        check_continuation(trainer["config"], self.cfg, folder.name)
        return folder, trainer

    def start(self) -> TrainState:
        log.info("starting from scratch")
        return TrainState(wandb_id=self.wandb_id)

    def resume(self, folder: Path, trainer: dict) -> TrainState:
        changed = trainer.get("shards", self.shards) != self.shards
        point = resume_point(trainer["derived"], trainer["state"], self.run, changed)
        if point.note:
            log.warning("%s", point.note)
        self.checkpoints.load(folder, self.engine, self.train_loader, point.restart_epoch)
        if point.reshaped:  # the old steps would sort after the new ones: keep them apart
            saved = trainer["derived"]
            self.checkpoints.set_aside_at_next_save(f"world{saved['world_size']}-batch"
                                                    f"{saved['global_batch']}")
        saved = trainer["state"]
        state = TrainState(**{**saved, "step": point.step, "validated_step": point.validated_step,
                              "wandb_id": self.wandb_id, "starts": saved.get("starts", 0) + 1})
        if "images_seen" not in saved:  # saved before images were counted
            state.images_seen = point.step * self.run.global_batch
        log.info("resumed from %s at step %d", folder, state.step)
        return state

    def raise_if_diverged(self, bad_step: int | None) -> None:
        if bad_step is None:
            return
        found = self.last_checkpoint or self.checkpoints.find_resume()
        self.tracker.alert(diverged(bad_step, str(found or "none")))
        raise NonFiniteLoss(f"the loss was NaN or Inf at step {bad_step}; the last good "
                            f"checkpoint is {found or 'none (no checkpoint yet)'}. Lower "
                            "optim.base_lr or lengthen the warmup, then resume from it")
