"""Weak-scaling model of BN-Inception data-parallel training on 8 and 64 H100-class GPUs.

    python bench/scaling_model.py [--img-per-s 8000] [--batch 128] [--bucket-mb 25]
                                  [--nvlink-gbs 370] [--ib-gbs 46] [--nics-per-node 8]
                                  [--latency-node-us 10] [--latency-cross-us 30]

From stated inputs, not measurements: the one-GPU training rate (default: the 8,000 img/s
bf16 floor, an assumption: not yet measured on a GPU), and link figures from
docs/performance.md's sources. Per step it adds to the compute time what the network
cannot hide:
- the gradient all-reduce of 11.3 M fp32 values (45 MB): NVLink ring inside a node, then
  each GPU's own NIC across nodes on 1/8 of the data (NCCL's hierarchical rings); DDP
  overlaps it with the backward pass (2/3 of the compute) except the last bucket;
- synchronized BN: 69 BN layers x 2 small collectives per step (the forward statistics
  and the backward sums), latency-bound and on the critical path, for each sync_bn choice.
Prints step time, weak-scaling efficiency against one GPU without communication, img/s,
time per epoch, and the time of the 90-epoch recipe; the paper's BN-x30 reached 72.2% in
2.7 M steps of 32 images (86 M images, 67 epochs), its best 74.8% later.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

PARAMETERS = 11_285_224  # BN-Inception without conv biases (docs/model.md)
BN_LAYERS = 69
IMAGENET_TRAIN = 1_281_167
GPUS_PER_NODE = 8
EPOCHS = 90  # configs/bn_inception.yaml
BACKWARD_SHARE = 2 / 3  # of a step's compute: the window the gradient all-reduce hides in


@dataclass(frozen=True)
class Links:
    nvlink_gbs: float  # all-reduce bus bandwidth inside a node
    ib_gbs: float  # per NIC
    nics_per_node: int
    latency_node_s: float  # one small collective inside a node
    latency_cross_s: float  # one small collective spanning nodes


def ring_seconds(nbytes: float, ranks: int, bus_gbs: float) -> float:
    """A ring all-reduce moves 2 (n-1)/n of the data over each link."""
    return 0.0 if ranks < 2 else 2 * (ranks - 1) / ranks * nbytes / (bus_gbs * 1e9)


def gradient_all_reduce(gpus: int, nbytes: float, links: Links) -> float:
    nodes = max(1, gpus // GPUS_PER_NODE)
    inside = ring_seconds(nbytes, min(gpus, GPUS_PER_NODE), links.nvlink_gbs)
    # Across nodes each GPU's NIC carries the 1/8 it reduced inside the node; fewer NICs
    # than GPUs share theirs.
    per_nic = nbytes / GPUS_PER_NODE * GPUS_PER_NODE / links.nics_per_node
    return inside + ring_seconds(per_nic, nodes, links.ib_gbs)


def sync_bn_seconds(choice: str, gpus: int, links: Links) -> float:
    if choice == "none" or gpus == 1:
        return 0.0
    spans_nodes = choice == "global" and gpus > GPUS_PER_NODE
    return 2 * BN_LAYERS * (links.latency_cross_s if spans_nodes else links.latency_node_s)


def step(gpus: int, compute_s: float, bucket_mb: float, sync_bn: str, links: Links) -> dict:
    nbytes = PARAMETERS * 4
    reduce_s = gradient_all_reduce(gpus, nbytes, links)
    tail_s = reduce_s * min(1.0, bucket_mb * 2**20 / nbytes)  # the last bucket waits
    exposed = max(tail_s, reduce_s - BACKWARD_SHARE * compute_s) if gpus > 1 else 0.0
    bn_s = sync_bn_seconds(sync_bn, gpus, links)
    return {"step_s": compute_s + exposed + bn_s, "reduce_s": reduce_s, "exposed_s": exposed,
            "bn_s": bn_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--img-per-s", type=float, default=8000, help="one GPU, no communication")
    p.add_argument("--batch", type=int, default=128, help="images per GPU per step")
    p.add_argument("--bucket-mb", type=float, default=25)
    p.add_argument("--nvlink-gbs", type=float, default=370)
    p.add_argument("--ib-gbs", type=float, default=46)
    p.add_argument("--nics-per-node", type=int, default=8)
    p.add_argument("--latency-node-us", type=float, default=10)
    p.add_argument("--latency-cross-us", type=float, default=30)
    a = p.parse_args()
    links = Links(a.nvlink_gbs, a.ib_gbs, a.nics_per_node, a.latency_node_us * 1e-6,
                  a.latency_cross_us * 1e-6)
    compute_s = a.batch / a.img_per_s
    print(f"inputs: {a.img_per_s:.0f} img/s on one GPU at batch {a.batch} ({compute_s * 1e3:.1f}"
          f" ms/step), gradients {PARAMETERS * 4 / 1e6:.0f} MB in {a.bucket_mb:g} MB buckets, "
          f"NVLink {a.nvlink_gbs:g} GB/s, {a.nics_per_node} x {a.ib_gbs:g} GB/s NICs per node, "
          f"small collectives {a.latency_node_us:g} us in a node / {a.latency_cross_us:g} us "
          "across")
    print("GPUs  sync_bn  all-reduce  exposed  sync-BN   step    efficiency   img/s    "
          "epoch   90 epochs")
    for gpus in (8, 64):
        for sync_bn in ("none", "node", "global"):
            if gpus == GPUS_PER_NODE and sync_bn == "global":
                continue  # the same as node on one node
            s = step(gpus, compute_s, a.bucket_mb, sync_bn, links)
            rate = gpus * a.batch / s["step_s"]
            epoch = IMAGENET_TRAIN / rate
            ms = {k: v * 1e3 for k, v in s.items()}
            print(f"{gpus:>4}  {sync_bn:7}  {ms['reduce_s']:7.2f} ms {ms['exposed_s']:6.2f} ms "
                  f"{ms['bn_s']:5.2f} ms {ms['step_s']:6.2f} ms "
                  f"{compute_s / s['step_s']:8.1%}  {rate:9.0f}  {epoch:5.1f} s "
                  f"{EPOCHS * epoch / 60:6.1f} min")
    print("efficiency: one GPU's step time over this step time (weak scaling, same batch per "
          "GPU); goal >= 95% at 64 GPUs with sync_bn node")


if __name__ == "__main__":
    main()
