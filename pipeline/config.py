"""The run's configuration: one typed tree of dataclass sections.

    cfg = load_config("configs/bn_inception.yaml", ["data.batch_size=192", "data.dtype=bfloat16"])
    loader = build_train_loader(cfg.data, rank, world_size, device)

Defaults and help live here; recipe YAMLs hold only their differences; dotted overrides
come last. OmegaConf checks the keys and types against these dataclasses (an unknown key
or a string for an int is an error) and `__post_init__` checks the values. Values that
depend on the world size or the data (global batch, scaled learning rate, steps) are not
here: pipeline/resolve.py turns the tree into the run's derived values.
"""

from __future__ import annotations

from dataclasses import MISSING as MISSING_FIELD
from dataclasses import Field, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DTYPES = ("float32", "float16", "bfloat16")
BACKENDS = ("dali", "webdataset")
DECAYS = ("cosine", "exponential", "step", "constant")


def _opt(default: Any, help_text: str) -> Any:
    """A field with its help text (shown by `describe`); lists and dicts are copied."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default),
                     metadata={"help": help_text})
    return field(default=default, metadata={"help": help_text})


@dataclass
class DataConfig:
    """The input pipeline: shards, augmentation, batching (pipeline/data, docs/data.md)."""

    shards: str = _opt(MISSING, "folder written by data_prep/shard.py (classes.json, train/, val/)")
    backend: str = _opt("dali", "'dali' (GPU decode) or 'webdataset' (CPU DataLoader fallback)")
    stage_dir: str = _opt("", "node-local folder (NVMe, /dev/shm) the first rank of each node "
                          "copies the shards to at start, verified and kept across runs; "
                          "training reads the copy. Empty: read data.shards directly")
    image_size: int = _opt(224, "training and validation crop size in pixels")
    val_resize_ratio: float = _opt(256 / 224, "val: shorter side = image_size * ratio, then "
                                   "center crop")
    crop_area: tuple[float, float] = _opt((0.08, 1.0), "random-resized-crop area fraction range")
    crop_aspect: tuple[float, float] = _opt((3 / 4, 4 / 3), "random-resized-crop aspect (w/h) "
                                            "range, sampled log-uniformly")
    train_antialias: bool = _opt(False, "antialias DALI's train-crop resize (Inception's and "
                                 "NVIDIA's DALI recipes train without; the webdataset "
                                 "backend always does)")
    flip_prob: float = _opt(0.5, "probability of a horizontal flip (0 disables it)")
    color_jitter: float = _opt(0.0, "brightness/contrast/saturation factors drawn from "
                               "[1-j, 1+j]; 0 disables")
    mean: tuple[float, float, float] = _opt(IMAGENET_MEAN, "per-channel RGB mean, 0-1 scale")
    std: tuple[float, float, float] = _opt(IMAGENET_STD, "per-channel RGB std, 0-1 scale")
    dtype: str = _opt("float32", "image dtype handed to the model: float32|float16|bfloat16")
    channels_last: bool = _opt(True, "images in NHWC memory (torch.channels_last), else NCHW")
    batch_size: int = _opt(128, "images per GPU per step (global batch = this x world size)")
    num_workers: int = _opt(4, "DALI CPU threads, or DataLoader processes for 'webdataset'")
    shuffle_buffer: int = _opt(4096, "samples in each reader's shuffle buffer (initial_fill)")
    shuffle_shards: bool = _opt(True, "re-order the train shards every epoch (same on all ranks)")
    prefetch: int = _opt(2, "batches prepared ahead (DALI prefetch_queue_depth, "
                         "DataLoader prefetch_factor)")
    hw_decoder_load: float = _opt(0.65, "share of JPEGs sent to the A100/H100 hardware "
                                  "decoder (GPU only)")
    seed: int = _opt(0, "run seed; readers and augmentations derive theirs from seed, rank "
                     "and epoch")
    return_keys: bool = _opt(False, "debug: keep each batch's sample keys in loader.last_keys")

    def __post_init__(self) -> None:
        _check(self.backend in BACKENDS, "data.backend", self.backend, f"one of {BACKENDS}")
        _check(self.dtype in DTYPES, "data.dtype", self.dtype, f"one of {DTYPES}")
        for name in ("image_size", "batch_size", "shuffle_buffer", "prefetch"):
            _check(getattr(self, name) >= 1, f"data.{name}", getattr(self, name), ">= 1")
        _check(self.num_workers >= 0, "data.num_workers", self.num_workers, ">= 0")
        _check(self.val_resize_ratio >= 1, "data.val_resize_ratio", self.val_resize_ratio, ">= 1")
        _check(_is_range(self.crop_area) and 0 < self.crop_area[0] and self.crop_area[1] <= 1,
               "data.crop_area", self.crop_area, "a range (lo, hi) with 0 < lo <= hi <= 1")
        _check(_is_range(self.crop_aspect) and self.crop_aspect[0] > 0, "data.crop_aspect",
               self.crop_aspect, "a range (lo, hi) with 0 < lo <= hi")
        _check(0 <= self.flip_prob <= 1, "data.flip_prob", self.flip_prob, "in [0, 1]")
        _check(0 <= self.color_jitter < 1, "data.color_jitter", self.color_jitter, "in [0, 1)")
        _check(len(self.mean) == 3 and len(self.std) == 3 and min(self.std) > 0,
               "data.mean/std", (self.mean, self.std), "three values each, std > 0")


@dataclass
class ModelConfig:
    """The network (pipeline/models, docs/model.md)."""

    name: str = _opt("bn_inception", "registered model name (pipeline.models.MODELS)")
    num_classes: int = _opt(0, "classifier outputs; 0 takes the number of classes.json")
    bn: bool = _opt(True, "BatchNorm after every conv; false is the paper's Inception baseline")
    act: str = _opt("relu", "nonlinearity: relu | sigmoid (the paper's BN-x5-Sigmoid)")
    dropout: float = _opt(0.0, "dropout before the classifier (the BN variants removed it)")
    bn_eps: float = _opt(1e-5, "BatchNorm epsilon")
    bn_momentum: float = _opt(0.1, "BatchNorm running-statistics momentum (PyTorch's sense)")
    separable_stem: bool = _opt(False, "depthwise-separable 7x7 stem conv (paper appendix)")
    sync_bn: str = _opt("global", "BN statistics over: global | node | none | a group size "
                        "(ranks); ghost-batch size = batch_size x group")
    compile: bool = _opt(False, "torch.compile the model")

    def __post_init__(self) -> None:
        _check(self.num_classes >= 0, "model.num_classes", self.num_classes, ">= 0")
        _check(self.act in ("relu", "sigmoid"), "model.act", self.act, "relu or sigmoid")
        _check(0 <= self.dropout < 1, "model.dropout", self.dropout, "in [0, 1)")
        _check(self.sync_bn in ("global", "node", "none") or
               (self.sync_bn.isdigit() and int(self.sync_bn) >= 1), "model.sync_bn",
               self.sync_bn, "global, node, none or a positive group size")

    @property
    def sync_group(self) -> str | int:
        """sync_bn as pipeline.models.syncbn takes it."""
        return int(self.sync_bn) if self.sync_bn.isdigit() else self.sync_bn


@dataclass
class OptimConfig:
    """Optimizer and the learning-rate scaling rule (pipeline/training/optim.py)."""

    name: str = _opt("sgd", "sgd (momentum) | lars (layer-wise adaptive rate, huge batches)")
    base_lr: float = _opt(0.1, "learning rate at reference_batch (Goyal et al.: 0.1 per 256)")
    reference_batch: int = _opt(256, "the global batch base_lr is meant for")
    scaling: str = _opt("linear", "lr = base_lr x (global batch / reference_batch) under "
                        "linear, its square root under sqrt, or base_lr under none")
    momentum: float = _opt(0.9, "SGD/LARS momentum")
    nesterov: bool = _opt(True, "Nesterov momentum")
    weight_decay: float = _opt(4e-5, "L2 weight decay (the paper cut Inception's 5x)")
    decay_norm_and_bias: bool = _opt(False, "also decay BN gamma/beta and biases")
    lars_trust: float = _opt(0.001, "LARS trust coefficient eta")
    label_smoothing: float = _opt(0.0, "cross-entropy label smoothing")
    grad_clip: float = _opt(0.0, "clip the global gradient norm to this; 0 disables")
    accumulation: int = _opt(1, "micro-batches per optimizer step (global batch grows with it)")

    def __post_init__(self) -> None:
        _check(self.name in ("sgd", "lars"), "optim.name", self.name, "sgd or lars")
        _check(self.scaling in ("linear", "sqrt", "none"), "optim.scaling", self.scaling,
               "linear, sqrt or none")
        _check(self.base_lr > 0, "optim.base_lr", self.base_lr, "> 0")
        _check(self.reference_batch >= 1, "optim.reference_batch", self.reference_batch, ">= 1")
        _check(0 <= self.momentum < 1, "optim.momentum", self.momentum, "in [0, 1)")
        _check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, ">= 0")
        _check(0 <= self.label_smoothing < 1, "optim.label_smoothing", self.label_smoothing,
               "in [0, 1)")
        _check(self.grad_clip >= 0, "optim.grad_clip", self.grad_clip, ">= 0")
        _check(self.accumulation >= 1, "optim.accumulation", self.accumulation, ">= 1")


@dataclass
class ScheduleConfig:
    """Learning rate per optimizer step: warmup, then a decay (pipeline/training/schedule.py)."""

    epochs: float = _opt(90.0, "training length in epochs")
    warmup_epochs: float = _opt(5.0, "linear warmup from warmup_start x lr to lr (cut at the "
                                "end of training)")
    warmup_start: float = _opt(0.0, "fraction of the peak lr at step 0")
    decay: str = _opt("cosine", "after warmup: cosine | exponential (the paper's) | step | "
                      "constant")
    final_fraction: float = _opt(0.0, "cosine: lr at the end as a fraction of the peak")
    exp_rate: float = _opt(0.94, "exponential: lr x exp_rate every exp_every_epochs")
    exp_every_epochs: float = _opt(2.0, "exponential: the epochs per exp_rate factor")
    exp_staircase: bool = _opt(False, "exponential: whole periods only (a step function)")
    milestones: list[float] = _opt([30.0, 60.0, 80.0], "step: epochs where lr is multiplied "
                                   "by step_gamma")
    step_gamma: float = _opt(0.1, "step: factor at each milestone")

    def __post_init__(self) -> None:
        _check(self.epochs > 0, "schedule.epochs", self.epochs, "> 0")
        _check(self.warmup_epochs >= 0, "schedule.warmup_epochs", self.warmup_epochs, ">= 0")
        _check(0 <= self.warmup_start <= 1, "schedule.warmup_start", self.warmup_start,
               "in [0, 1]")
        _check(self.decay in DECAYS, "schedule.decay", self.decay, f"one of {DECAYS}")
        _check(0 < self.exp_rate <= 1 and self.exp_every_epochs > 0, "schedule.exp_rate/"
               "exp_every_epochs", (self.exp_rate, self.exp_every_epochs), "(0, 1] and > 0")
        _check(list(self.milestones) == sorted(self.milestones), "schedule.milestones",
               self.milestones, "increasing epochs")


@dataclass
class PrecisionConfig:
    """Numerics of the forward/backward pass; BN and the weights always stay fp32."""

    autocast: str = _opt("bfloat16", "float32 (off) | bfloat16 | float16 (with a loss scaler)")
    deterministic: bool = _opt(False, "deterministic kernels (bit-exact resume on GPU; slower)")

    def __post_init__(self) -> None:
        _check(self.autocast in DTYPES, "precision.autocast", self.autocast, f"one of {DTYPES}")


@dataclass
class DistConfig:
    """Processes and engines (pipeline/dist/, pipeline/training/engines/)."""

    engine: str = _opt("ddp", "ddp (DistributedDataParallel) | deepspeed")
    zero_stage: int = _opt(0, "deepspeed: ZeRO stage 0, 1 or 2")
    backend: str = _opt("auto", "auto (nccl on GPUs, gloo on CPU) | nccl | gloo")
    timeout_s: int = _opt(600, "a collective that waits longer fails the run (a dead rank)")
    bucket_mb: int = _opt(25, "gradient all-reduce bucket size in MB")
    device: str = _opt("auto", "auto (cuda when present) | cuda | cpu")
    max_requeues: int = _opt(100, "after a preemption save, requeue the SLURM job at most "
                             "this many times (SLURM_RESTART_COUNT); 0: never")
    max_restarts: int = _opt(3, "a crashed or frozen step runs again inside the SLURM job "
                             "at most this many times (slurm/train_64gpu.sh); 0: never")
    restart_pause_s: int = _opt(10, "pause before restart k: k times this long")
    startup_timeout_s: int = _opt(1800, "watchdog: from a rank's start to its first step "
                                  "(build, resume, torch.compile, first DALI batches)")
    step_timeout_s: int = _opt(300, "watchdog: the least time between two steps; it grows "
                               "to 10x the slowest step seen and to timeout_s + 60")
    save_timeout_s: int = _opt(1800, "watchdog: one checkpoint save (at least timeout_s + 60)")
    validation_timeout_s: int = _opt(1800, "watchdog: the least time for precise BN and "
                                     "validation; grows with 10x their expected time")

    def __post_init__(self) -> None:
        _check(self.engine in ("ddp", "deepspeed"), "dist.engine", self.engine, "ddp or deepspeed")
        _check(self.zero_stage in (0, 1, 2), "dist.zero_stage", self.zero_stage, "0, 1 or 2")
        _check(self.backend in ("auto", "nccl", "gloo"), "dist.backend", self.backend,
               "auto, nccl or gloo")
        _check(self.device in ("auto", "cuda", "cpu"), "dist.device", self.device,
               "auto, cuda or cpu")
        _check(self.timeout_s >= 1, "dist.timeout_s", self.timeout_s, ">= 1")
        _check(self.max_requeues >= 0, "dist.max_requeues", self.max_requeues, ">= 0")
        _check(self.max_restarts >= 0, "dist.max_restarts", self.max_restarts, ">= 0")
        _check(self.restart_pause_s >= 0, "dist.restart_pause_s", self.restart_pause_s, ">= 0")
        for key in ("startup", "step", "save", "validation"):
            value = getattr(self, f"{key}_timeout_s")
            _check(value >= 0, f"dist.{key}_timeout_s", value, ">= 0 (0: no watchdog)")


@dataclass
class CheckpointConfig:
    """When to save, what to keep, where to resume from (pipeline/training/checkpoint.py)."""

    every_steps: int = _opt(0, "also save every N optimizer steps; 0: at epoch ends only")
    keep_last: int = _opt(3, "newest checkpoints kept (the best one is kept besides)")
    resume: str = _opt("auto", "auto (newest valid one of the run, else start) | none | a "
                       "checkpoint folder")
    allow_config_change: bool = _opt(False, "resume even though the model, optimizer, "
                                     "schedule, augmentation or seeds differ from the "
                                     "checkpoint's config (pipeline/training/continuity.py)")

    def __post_init__(self) -> None:
        _check(self.every_steps >= 0, "checkpoint.every_steps", self.every_steps, ">= 0")
        _check(self.keep_last >= 1, "checkpoint.keep_last", self.keep_last, ">= 1")


@dataclass
class EvalConfig:
    """Validation over the exact val set (pipeline/training/validation.py)."""

    every_epochs: int = _opt(1, "evaluate every N epochs and at the end; 0: at the end only")
    precise_bn_batches: int = _opt(0, "recompute BN statistics on this many train batches "
                                   "before evaluating; 0 keeps the running averages")

    def __post_init__(self) -> None:
        _check(self.every_epochs >= 0, "eval.every_epochs", self.every_epochs, ">= 0")
        _check(self.precise_bn_batches >= 0, "eval.precise_bn_batches",
               self.precise_bn_batches, ">= 0")


@dataclass
class LogConfig:
    """metrics.jsonl, the console, W&B and the alerts (pipeline/monitor, docs/monitoring.md)."""

    every_steps: int = _opt(50, "train metrics every N optimizer steps")
    wandb: str = _opt("disabled", "W&B mode: online | offline | disabled (key from WANDB_API_KEY)")
    project: str = _opt("bn-inception", "W&B project")
    entity: str = _opt("", "W&B entity (team or user); empty: the key's default")
    tags: list[str] = _opt([], "W&B tags")
    wandb_timeout_s: float = _opt(60.0, "give up starting W&B after this long and train on "
                                  "without it (metrics.jsonl has everything)")
    samples_every_epochs: int = _opt(10, "a grid of augmented train images at the start and "
                                     "every N epochs (samples/ and W&B); 0: at the start only")
    alert_throughput_fraction: float = _opt(0.5, "alert when img/s falls below this fraction "
                                            "of the session's running median; 0: never")
    alert_data_wait_factor: float = _opt(3.0, "alert when one rank waits for data this many "
                                         "times the other ranks' median; 0: never")
    alert_data_wait_intervals: int = _opt(3, "... for this many log intervals in a row")
    alert_every_s: float = _opt(1800.0, "an alert of one kind is raised at most once per "
                                "this many seconds (console and W&B)")

    def __post_init__(self) -> None:
        _check(self.every_steps >= 1, "log.every_steps", self.every_steps, ">= 1")
        _check(self.wandb_timeout_s > 0, "log.wandb_timeout_s", self.wandb_timeout_s, "> 0")
        _check(self.samples_every_epochs >= 0, "log.samples_every_epochs",
               self.samples_every_epochs, ">= 0")
        _check(self.alert_data_wait_intervals >= 1, "log.alert_data_wait_intervals",
               self.alert_data_wait_intervals, ">= 1")
        _check(0 <= self.alert_throughput_fraction < 1, "log.alert_throughput_fraction",
               self.alert_throughput_fraction, "in [0, 1)")
        _check(self.alert_data_wait_factor >= 0, "log.alert_data_wait_factor",
               self.alert_data_wait_factor, ">= 0")
        _check(self.alert_every_s >= 0, "log.alert_every_s", self.alert_every_s, ">= 0")
        _check(self.wandb in ("online", "offline", "disabled"), "log.wandb", self.wandb,
               "online, offline or disabled")


@dataclass
class Config:
    """The whole run: `name` names runs/<name>/, every section configures one part."""

    name: str = _opt("bn_inception", "run name: runs/<name>/ holds everything the run writes")
    runs_dir: str = _opt("runs", "parent folder of run folders (shared by all nodes)")
    seed: int = _opt(0, "weight initialization and dropout (data order: data.seed)")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


def load_config(recipe: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the recipe YAML (differences only; `base: other.yaml` merges that
    recipe, relative to this one, first), then dotted overrides."""
    tree = OmegaConf.structured(Config)
    if recipe is not None:
        tree = OmegaConf.merge(tree, _recipe(recipe))
    tree = OmegaConf.merge(tree, OmegaConf.from_dotlist(list(overrides or [])))
    return OmegaConf.to_object(tree)


def _recipe(recipe, seen: tuple[Path, ...] = ()):
    """The recipe's tree over its bases' (a file path, or an open YAML stream)."""
    tree = OmegaConf.load(recipe)
    base = tree.pop("base", None) if isinstance(tree, DictConfig) else None
    if base is None:
        return tree
    if not isinstance(recipe, str | Path):
        raise ValueError("base: needs a recipe file, to find the base beside it")
    path = (Path(recipe).parent / str(base)).resolve()
    if path in seen or path == Path(recipe).resolve():
        raise ValueError(f"{recipe}: base: {base} makes a cycle of recipes")
    if not path.is_file():
        raise ValueError(f"{recipe}: base: {base} not found (looked for {path}); give a "
                         "recipe file relative to this one")
    return OmegaConf.merge(_recipe(path, (*seen, Path(recipe).resolve())), tree)


def to_yaml(cfg: Config) -> str:
    """The resolved tree, as written to the run directory."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: Config) -> dict:
    """The resolved tree as plain dicts and lists (for W&B's run config)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg))


def describe(section: type) -> str:
    """One line per field: name, default and help (for --help texts and docs)."""
    return "\n".join(describe_field(f) for f in fields(section))


def describe_field(f: Field) -> str:
    default = f.default_factory() if f.default is MISSING_FIELD else f.default
    return f"{f.name} = {default!r}: {f.metadata.get('help', '')}"


def describe_tree(tree: type) -> str:
    """Every key of a config tree as `section.key = default: help`, sections in order."""
    lines = []
    for f in fields(tree):
        default = f.default_factory() if f.default is MISSING_FIELD else f.default
        if is_dataclass(default):
            lines += [f"{f.name}.{line}" for line in describe(type(default)).splitlines()]
        else:
            lines.append(describe_field(f))
    return "\n".join(lines)


def _is_range(value: tuple[float, float]) -> bool:
    return len(value) == 2 and value[0] <= value[1]


def _check(ok: bool, name: str, value: Any, expected: str) -> None:
    if ok:
        return
    if value in ("True", "False"):  # a text field given yes/no/on/off/true/false
        raise ValueError(f"{name} = {value!r}: expected {expected}. YAML and the command "
                         f"line read yes, no, on, off, true and false as booleans, which "
                         f"this text key receives as {value!r}: write one of the words above")
    raise ValueError(f"{name} = {value!r}: expected {expected}")
