"""The BN paper's Section 4.1: a sigmoid MLP with and without BN, on MNIST or on digits.

    python -m pipeline.paper mnist [--idx DIR] [--out paper/mnist] [--steps N] [--every N]
        [--lr 0.5] [--init-std 0.1] [--seed 0] [--unit 0] [--target 0.9]

The paper's net: 3 fully connected hidden layers of 100 sigmoid units, a 10-way softmax
with cross-entropy, weights from a small random Gaussian, 50,000 steps of 60 examples;
the BN net normalizes each hidden layer's x = Wu before its sigmoid (no bias: BN's beta
replaces it). --idx DIR reads the four MNIST IDX files there (train-images-idx3-ubyte,
train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each may be
.gz) and runs 50,000 steps; without it the net learns scikit-learn's 8x8 digits (1,797
images, a fixed stratified 30% held out as the test set; pip install -e .[paper]) for
5,000 steps. Pixels are scaled to [0, 1].

What the paper leaves open, chosen here: the Gaussian's std (--init-std 0.1; at 0.01 the
net without BN barely leaves chance within the digits' budget), plain SGD at lr 0.5
(the paper names no learning rate; this one trains the no-BN net within the budget and
is the same for both nets), and how the sigmoid input's percentiles are taken: over the
whole test set, passed through a copy of the net in training mode, so the BN net
normalizes by that set's own statistics as it does in training. Test accuracy uses the
net in inference mode (BN by its moving averages). Both nets start from the same weights
and see the same batches in the same order: only BN differs.

Every --every steps (and at steps 0 and the last) it records each net's test accuracy and
loss and the 15th, 50th and 85th percentiles of the sigmoid input of one last-hidden-layer
unit (--unit). It writes to --out: fig1a_test_accuracy.png (the paper's Figure 1a),
fig1bc_sigmoid_input.png (Figure 1b, c), mnist.json (every recorded number and the
settings) and mnist.md (the table beside the paper's claims; pipeline/paper/mnist_report.py).
The data come from pipeline/paper/mnist_data.py.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.paper.mnist_data import Data, DataError, Split, load_digits, load_idx_dir

PERCENTILES = (15, 50, 85)
CURVE_KEYS = ("step", "test_accuracy", "test_loss", "p15", "p50", "p85")
NETS = {"without_bn": False, "with_bn": True}  # the results' keys: name -> uses BN


@dataclass(frozen=True)
class Settings:
    steps: int
    every: int
    lr: float = 0.5
    init_std: float = 0.1
    batch: int = 60
    width: int = 100
    depth: int = 3
    seed: int = 0
    unit: int = 0  # the last hidden layer's unit whose sigmoid input is tracked
    target: float = 0.9  # test accuracy for "steps to"


class Hidden(nn.Module):
    """z = sigmoid(BN(Wu)), or sigmoid(Wu + b) without BN; `preact` is the sigmoid's input."""

    def __init__(self, n_in: int, n_out: int, bn: bool):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out, bias=not bn)  # with BN, beta is the bias
        self.norm = nn.BatchNorm1d(n_out) if bn else nn.Identity()

    def preact(self, u: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(u))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.preact(u))


class SigmoidMLP(nn.Module):
    def __init__(self, n_in: int, bn: bool, width: int = 100, depth: int = 3,
                 classes: int = 10):
        super().__init__()
        self.hidden = nn.Sequential(*(Hidden(n_in if i == 0 else width, width, bn)
                                      for i in range(depth)))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(x))

    def last_preact(self, x: torch.Tensor) -> torch.Tensor:
        """The sigmoid inputs of the last hidden layer, (n, width)."""
        return self.hidden[-1].preact(self.hidden[:-1](x))


def build_net(n_in: int, bn: bool, s: Settings) -> SigmoidMLP:
    """Weights N(0, init_std) from the seed, biases 0: the same weights with and without BN."""
    net = SigmoidMLP(n_in, bn, s.width, s.depth)
    g = torch.Generator().manual_seed(s.seed)
    for m in net.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, s.init_std, generator=g)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


def record_steps(s: Settings) -> list[int]:
    """Step 0, every `every` steps, and the last."""
    return sorted({*range(0, s.steps + 1, s.every), s.steps})


def batches(train: Split, s: Settings) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of s.batch from a fresh permutation each epoch (its tail dropped), seeded."""
    g = torch.Generator().manual_seed(s.seed)
    n = len(train.y)
    while True:
        order = torch.randperm(n, generator=g)
        for i in range(n // s.batch):
            idx = order[i * s.batch:(i + 1) * s.batch]
            yield train.x[idx], train.y[idx]


@torch.no_grad()
def observe(net: SigmoidMLP, test: Split, unit: int) -> dict[str, float]:
    net.eval()
    logits = net(test.x)
    # a copy in training mode: BN by the test set's own statistics, as a training batch
    # is normalized, and the net's moving averages untouched
    z = copy.deepcopy(net).train().last_preact(test.x)[:, unit]
    p = torch.quantile(z, torch.tensor(PERCENTILES, dtype=z.dtype) / 100).tolist()
    return {"test_accuracy": (logits.argmax(1) == test.y).float().mean().item(),
            "test_loss": F.cross_entropy(logits, test.y).item(),
            **{f"p{q}": v for q, v in zip(PERCENTILES, p, strict=True)}}


def train(net: SigmoidMLP, data: Data, s: Settings, label: str) -> dict[str, list]:
    """Plain SGD on softmax cross-entropy; the curve holds CURVE_KEYS at record_steps."""
    opt = torch.optim.SGD(net.parameters(), lr=s.lr)
    when, curve = set(record_steps(s)), {k: [] for k in CURVE_KEYS}
    started = time.perf_counter()
    _record(curve, 0, observe(net, data.test, s.unit))
    for step, (x, y) in zip(range(1, s.steps + 1), batches(data.train, s), strict=False):
        net.train()
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step in when:
            _record(curve, step, observe(net, data.test, s.unit))
        if step % max(1, s.steps // 10) == 0:
            print(f"{label:>10} step {step:6d}: test accuracy {curve['test_accuracy'][-1]:.2%}"
                  f" at step {curve['step'][-1]} ({time.perf_counter() - started:.1f} s)",
                  flush=True)
    return curve


def _record(curve: dict[str, list], step: int, observed: dict[str, float]) -> None:
    for key, value in {"step": step, **observed}.items():
        curve[key].append(value)


def resolve(args: argparse.Namespace, data: Data) -> Settings:
    """The settings: --steps defaults to 50,000 on MNIST (the paper's) and 5,000 on digits."""
    steps = args.steps or (50_000 if args.idx else 5_000)
    every = args.every or max(1, steps // 100)
    if not 0 <= args.unit < 100:
        raise DataError(f"--unit {args.unit}: the last hidden layer has units 0-99")
    if len(data.train.y) < 60:
        raise DataError(f"{data.name}: {len(data.train.y)} training images, fewer than one "
                        "batch of 60")
    return Settings(steps, every, args.lr, args.init_std, seed=args.seed, unit=args.unit,
                    target=args.target)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The experiment's options (python -m pipeline.paper mnist)."""
    p.add_argument("--idx", type=Path, help="folder of the four MNIST IDX files "
                   "(default: scikit-learn's digits)")
    p.add_argument("--out", type=Path, default=Path("paper/mnist"),
                   help="folder for the figures, mnist.json and mnist.md (default: %(default)s)")
    p.add_argument("--steps", type=int, help="SGD steps of 60 (default 50,000 on MNIST, "
                   "5,000 on digits)")
    p.add_argument("--every", type=int, help="record every N steps (default steps / 100)")
    p.add_argument("--lr", type=float, default=Settings.lr,
                   help="plain SGD learning rate (default: %(default)s)")
    p.add_argument("--init-std", type=float, default=Settings.init_std,
                   help="std of the Gaussian the weights start from (default: %(default)s)")
    p.add_argument("--seed", type=int, default=Settings.seed,
                   help="of the weights and the batch order (default: %(default)s)")
    p.add_argument("--unit", type=int, default=Settings.unit,
                   help="the last hidden layer's unit whose sigmoid input is tracked, 0-99 "
                   "(default: %(default)s)")
    p.add_argument("--target", type=float, default=Settings.target,
                   help="test accuracy for the table's 'steps to' (default: %(default)s)")


def load(args: argparse.Namespace) -> tuple[Data, Settings]:
    """The data and the settings the options ask for; DataError, IdxError or OSError."""
    for name in ("steps", "every"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise DataError(f"--{name} {getattr(args, name)}: expected a positive number "
                            "of steps")
    data = load_idx_dir(args.idx) if args.idx else load_digits()
    return data, resolve(args, data)


def run(data: Data, s: Settings) -> dict[str, dict[str, list]]:
    """Both nets trained on the same batches: each net's recorded curve."""
    print(f"{data.name}: {len(data.train.y)} train, {len(data.test.y)} test images; {s}",
          flush=True)
    n_in, threads = data.train.x.shape[1], torch.get_num_threads()
    torch.set_num_threads(1)  # the net is too small to gain from threads: they cost time
    try:
        return {name: train(build_net(n_in, bn, s), data, s, name) for name, bn in NETS.items()}
    finally:
        torch.set_num_threads(threads)
