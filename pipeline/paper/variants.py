"""The BN paper's Section 4.2 at small scale: its variants on generated data, on the CPU.

    python -m pipeline.paper variants [--out paper/variants] [--steps 300] [--size 32]
        [--target 0.5] [--only bn_x30 inception ...]

Each variant is its own recipe in configs/ (inception, bn_baseline, bn_x5, bn_x30,
bn_x5_sigmoid; inception_x30 is inception.yaml at BN-x30's lr), trained by the project's
trainer with the same small-scale changes for all: generated data (data_prep/sample.py:
classes told apart by colour and stripe angle, with noise) at --size pixels, the same
step budget and data order, the recipes' batch of 32 and so the paper's learning rates
unscaled (the recipes state them per 32 images), no warmup (the paper had none), and
the recipes' decays counted in epochs of the small train set. Validation every epoch
gives the top-1 curve against steps (the paper's Figure 2), and the table gives the
steps to --target and the best top-1 beside the paper's numbers, with a verdict on each
of the paper's claims at this scale. Everything is written to --out: the data, one run
folder per variant, variants.json, variants.md and val_top1.png. --out must be new,
empty, or the study's own from an earlier call (a rerun replaces its runs, and its data
when the scale changed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from data_prep import sample, shard
from pipeline.files import claim_folder
from pipeline.reports.plots import VAL_TOP1, write_plots
from pipeline.reports.runs import load_run
from pipeline.reports.summary import reached
from pipeline.training.process import train_process

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
BATCH = 32  # every recipe's per-replica batch, the paper's
MARK = ".pipeline-paper-variants"  # --out is the study's: its runs and data are replaced


@dataclass(frozen=True)
class Variant:
    name: str
    recipe: str
    label: str
    paper_steps: str  # to 72.2% top-1 (Table 2, Figure 2)
    paper_best: str
    overrides: tuple[str, ...] = ()


VARIANTS = (
    Variant("inception", "inception.yaml", "Inception (no BN, lr 0.0015)", "31.0 M", "72.2%"),
    Variant("bn_baseline", "bn_baseline.yaml", "BN-Baseline (lr 0.0015)", "13.3 M", "72.7%"),
    Variant("bn_x5", "bn_x5.yaml", "BN-x5 (lr 0.0075)", "2.1 M", "73.0%"),
    Variant("bn_x30", "bn_x30.yaml", "BN-x30 (lr 0.045)", "2.7 M", "74.8%"),
    Variant("bn_x5_sigmoid", "bn_x5_sigmoid.yaml", "BN-x5-Sigmoid", "never", "69.8%"),
    Variant("inception_x30", "inception.yaml", "Inception at BN-x30's lr 0.045",
            "(does not train)", "-", ("optim.base_lr=0.045",)),
)
BY_NAME = {v.name: v for v in VARIANTS}


@dataclass(frozen=True)
class Scale:
    steps: int = 300
    size: int = 32
    classes: int = 10
    train_per_class: int = 80
    val_per_class: int = 20
    seed: int = 0

    @property
    def steps_per_epoch(self) -> int:
        return self.classes * self.train_per_class // BATCH


def make_data(out: Path, scale: Scale) -> Path:
    """The generated tree and its shards, reused when an earlier call made the same."""
    shards, marker = out / "data" / "shards", out / "data" / "made.json"
    made = {"classes": scale.classes, "train_per_class": scale.train_per_class,
            "val_per_class": scale.val_per_class, "seed": scale.seed, "size": scale.size}
    if marker.is_file() and json.loads(marker.read_text()) == made:
        return shards
    shutil.rmtree(out / "data", ignore_errors=True)  # another scale's (--out is the study's)
    source = out / "data" / "source"
    sample.generate(source, scale.classes, scale.train_per_class, scale.val_per_class,
                    seed=scale.seed, size=(2 * scale.size, 2 * scale.size))
    if shard.main(["--source", str(source), "--out", str(shards), "--shard-size", "128",
                   "--workers", "1"]) != 0:
        raise RuntimeError(f"sharding {source} failed (see above)")
    marker.write_text(json.dumps(made) + "\n")
    return shards


def overrides(variant: Variant, scale: Scale, shards: Path, runs: Path) -> list[str]:
    """The small-scale changes, the same for every variant (the module docstring's)."""
    epochs = scale.steps / scale.steps_per_epoch
    return [f"data.shards={shards}", f"runs_dir={runs}", f"name={variant.name}",
            f"data.image_size={scale.size}", "data.val_resize_ratio=1.125",
            f"data.batch_size={BATCH}", "data.num_workers=1", "data.shuffle_buffer=256",
            "data.prefetch=1", "data.dtype=float32", f"data.seed={scale.seed}",
            f"seed={scale.seed}", "dist.device=cpu", "precision.autocast=float32",
            "precision.deterministic=true", f"schedule.epochs={epochs}",
            "schedule.warmup_epochs=0", "eval.every_epochs=1", "eval.precise_bn_batches=0",
            "log.every_steps=5", "log.wandb=disabled", "log.samples_every_epochs=0",
            "checkpoint.keep_last=1", *variant.overrides]


def train_variant(variant: Variant, scale: Scale, shards: Path, runs: Path) -> dict:
    ended = train_process(str(CONFIGS / variant.recipe),
                          overrides(variant, scale, shards, runs))
    folder = runs / variant.name
    if ended.ending not in ("done", "diverged"):
        raise RuntimeError(f"{variant.name}: training ended {ended.ending} (status "
                           f"{ended.status}); see {folder / 'logs'}")
    return {"status": "diverged" if ended.ending == "diverged" else "trained",
            "folder": str(folder)}


def outcome(variant: Variant, folder: Path, status: str, scale: Scale, target: float) -> dict:
    run = load_run(folder)
    val = [(r["step"], r["val/top1"]) for r in run.val]
    best = max(val, key=lambda point: point[1], default=(None, 0.0))
    hit = reached(run, target)
    return {"variant": variant.name, "label": variant.label, "status": status,
            "val_top1": val, "best_top1": best[1], "best_step": best[0],
            "steps_to_target": None if hit is None else hit.step,
            "final_train_loss": run.train[-1]["train/loss"] if run.train else None,
            "paper_steps_to_72.2%": variant.paper_steps, "paper_best_top1": variant.paper_best}


def claims(results: dict[str, dict], chance: float) -> list[tuple[str, str]]:
    """(claim, verdict) for the paper's statements whose variants were trained."""
    def steps(name: str) -> float:
        hit = results[name]["steps_to_target"]
        return float("inf") if hit is None else hit

    def has(*names: str) -> bool:
        return all(n in results for n in names)

    found = []
    if has("inception", "bn_baseline"):
        found.append(("BN-Baseline reaches the target in fewer steps than Inception",
                      steps("bn_baseline") < steps("inception")))
    for faster in ("bn_x5", "bn_x30"):
        if has(faster, "bn_baseline"):
            found.append((f"{BY_NAME[faster].label} reaches it in fewer steps than "
                          "BN-Baseline", steps(faster) < steps("bn_baseline")))
    if has("inception_x30"):
        r = results["inception_x30"]
        found.append(("Inception without BN fails at BN-x30's lr: it diverges or never "
                      "reaches the target", r["status"] == "diverged"
                      or r["steps_to_target"] is None))
    if has("bn_x5_sigmoid"):
        found.append(("BN-x5-Sigmoid trains (best top-1 above 2x chance)",
                      results["bn_x5_sigmoid"]["best_top1"] >= 2 * chance))
    return [(text, "holds" if ok else "does not hold at this scale") for text, ok in found]


def write_table(out: Path, results: dict[str, dict], verdicts, scale: Scale,
                target: float) -> Path:
    lines = [f"# BN paper, Section 4.2, at small scale: {scale.steps} steps of {BATCH} "
             f"images at {scale.size} px, {scale.classes} generated classes\n",
             f"| variant | steps to {target:.0%} top-1 | best val top-1 (step) | final train "
             "loss | paper: steps to 72.2% | paper: best top-1 |", "|---|---|---|---|---|---|"]
    for r in results.values():
        to_target = "not reached" if r["steps_to_target"] is None else str(r["steps_to_target"])
        if r["status"] == "diverged":
            to_target += " (diverged: NaN loss)"
        loss = "-" if r["final_train_loss"] is None else f"{r['final_train_loss']:.3f}"
        lines.append(f"| {r['label']} | {to_target} | {r['best_top1']:.1%} ({r['best_step']}) "
                     f"| {loss} | {r['paper_steps_to_72.2%']} | {r['paper_best_top1']} |")
    lines += ["", f"Chance is {1 / scale.classes:.0%}. The paper's steps are of 32 images "
              "(asynchronous replicas); ours are synchronous steps of 32.", "",
              "| the paper's claim | here |", "|---|---|"]
    lines += [f"| {text} | {verdict} |" for text, verdict in verdicts]
    path = out / "variants.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The study's options (python -m pipeline.paper variants)."""
    p.add_argument("--out", type=Path, default=Path("paper/variants"))
    p.add_argument("--steps", type=int, default=Scale.steps, help="optimizer steps each")
    p.add_argument("--size", type=int, default=Scale.size, help="crop size in pixels")
    p.add_argument("--classes", type=int, default=Scale.classes)
    p.add_argument("--train-per-class", type=int, default=Scale.train_per_class)
    p.add_argument("--target", type=float, default=0.9, help="val top-1 for 'steps to'")
    p.add_argument("--only", nargs="+", choices=sorted(BY_NAME), help="a subset of variants")


def run(args: argparse.Namespace) -> int:
    scale = Scale(args.steps, args.size, args.classes, args.train_per_class)
    if scale.steps_per_epoch < 1:
        print(f"variants: {args.classes} x {args.train_per_class} train images make no batch "
              f"of {BATCH}", file=sys.stderr)
        return 2
    problem = claim_folder(args.out, MARK, "python -m pipeline.paper variants")
    if problem:
        print(f"variants: --out {problem}", file=sys.stderr)
        return 2
    chosen = [BY_NAME[n] for n in args.only] if args.only else list(VARIANTS)
    shards, runs = make_data(args.out, scale), args.out / "runs"
    results = {}
    for variant in chosen:
        print(f"== {variant.label}: configs/{variant.recipe} {' '.join(variant.overrides)}",
              flush=True)
        # a fresh folder (--out is the study's own): an earlier call's run would be
        # resumed (or refused) instead
        folder = runs / variant.name
        if folder.exists():
            shutil.rmtree(folder)
        trained = train_variant(variant, scale, shards, runs)
        results[variant.name] = outcome(variant, folder, trained["status"], scale,
                                        args.target)
    verdicts = claims(results, 1 / scale.classes)
    (args.out / "variants.json").write_text(json.dumps(
        {"scale": vars(args) | {"out": str(args.out)}, "results": results,
         "claims": verdicts}, indent=1, default=str) + "\n")
    write_plots([load_run(runs / v.name) for v in chosen], args.out, [args.target],
                specs=(VAL_TOP1,))
    table = write_table(args.out, results, verdicts, scale, args.target)
    print(table.read_text())
    return 0
