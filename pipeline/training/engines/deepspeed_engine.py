"""DeepSpeed (ZeRO stage 0/1/2) with its torch_autocast section: fp32 weights and BN."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import deepspeed
import torch
from torch import nn

from pipeline.dist.group import DistEnv
from pipeline.resolve import Derived
from pipeline.training.loss import criterion
from pipeline.training.optim import build_optimizer

log = logging.getLogger(__name__)
TAG = "deepspeed"  # the sub-folder DeepSpeed's collective save writes


def deepspeed_config(run: Derived) -> dict:
    """The DeepSpeed config the run's derived values imply (logged at start)."""
    spec = run.engine
    return {
        "train_batch_size": run.global_batch,
        "train_micro_batch_size_per_gpu": run.per_gpu_batch,
        "gradient_accumulation_steps": run.accumulation,
        "gradient_clipping": spec.optim.grad_clip,
        "zero_optimization": {"stage": spec.zero_stage},
        "zero_allow_untested_optimizer": True,  # our SGD/LARS rather than DeepSpeed's own
        "torch_autocast": {"enabled": spec.autocast_dtype is not None, "dtype": spec.autocast},
        "steps_per_print": 2**31 - 1,  # the trainer logs; DeepSpeed stays quiet
    }


class DeepSpeedEngine:
    def __init__(self, model: nn.Module, run: Derived, env: DistEnv):
        self.module = model
        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
        # DeepSpeed reads these even with the process group up; srun does not set them.
        for name, value in (("RANK", env.rank), ("WORLD_SIZE", env.world_size),
                            ("LOCAL_RANK", env.local_rank)):
            os.environ.setdefault(name, str(value))
        deepspeed.init_distributed(dist_backend=env.backend, auto_mpi_discovery=False)
        # The weights arrive NCHW (resolve decides: DeepSpeed flattens parameters as plain
        # contiguous memory).
        config = deepspeed_config(run)
        log.info("DeepSpeed config: %s", config)
        self.model, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=build_optimizer(model, run.engine.optim, run.lr),
            config=config, dist_init_required=False)
        if run.engine.compile:
            self.model.compile()  # DeepSpeed compiles its module in place
        self.criterion = criterion(run.engine.optim.label_smoothing)
        self.zero_stage = run.engine.zero_stage

    def forward_backward(self, images: torch.Tensor, labels: torch.Tensor,
                         boundary: bool) -> tuple[torch.Tensor, torch.Tensor]:
        # DeepSpeed divides by the accumulation steps and reduces on the boundary only.
        self.model.set_gradient_accumulation_boundary(boundary)
        logits = self.model(images)  # under autocast when torch_autocast is enabled
        loss = self.criterion(logits, labels)
        self.model.backward(loss)
        return loss.detach(), logits.detach()

    def step(self, measure_norm: bool = False) -> torch.Tensor | None:
        """The global gradient norm when asked: ZeRO's own (stages 1, 2 compute it in the
        step), else that of the averaged gradients every rank holds (stage 0 computes it
        only to clip)."""
        held = None
        if measure_norm and self.zero_stage == 0:
            held = nn.utils.get_total_norm(
                [p.grad for p in self.module.parameters() if p.grad is not None])
        self.model.step()  # clipping, the fp16 scaler and zero_grad happen inside
        if not measure_norm:
            return None
        norm = self.model.get_global_grad_norm()
        return held if norm is None else torch.as_tensor(float(norm))

    def loss_scale(self) -> float | None:
        scale = getattr(self.model.optimizer, "cur_scale", None)  # its fp16 loss scaler's
        return None if scale is None else float(scale)

    def save(self, folder: Path) -> None:
        """DeepSpeed's collective save; every rank writes its part."""
        self.model.save_checkpoint(str(folder), tag=TAG, save_latest=False)

    def load(self, folder: Path) -> None:
        path, _ = self.model.load_checkpoint(str(folder), tag=TAG, load_optimizer_states=True,
                                             load_lr_scheduler_states=False)
        if path is None:
            raise FileNotFoundError(f"{folder / TAG}: no DeepSpeed checkpoint there")
