"""The BN-Inception port of the authors' Caffe release, as a checkpoint of this pipeline.

    python -m pipeline.models import-caffe-port bn_inception-239d2248.pth bn_inception_caffe
    python -m pipeline.evaluate --checkpoint bn_inception_caffe data.shards=/data/shards

The port (pretrainedmodels' `bninception`, 73.52% top-1 at 224) has this network's layout
layer for layer; three things differ, and the conversion changes only numbers:

1. Names. The port's conv `inception_3a_double_3x3_1` with its BN `..._bn` is our
   `features.inception_3a.branch3x3dbl_1.{conv,bn}`; `last_linear` is `fc`. The table is
   derived from our model's ConvBNAct layers (`port_names`), and a file must have
   exactly the keys and shapes that gives (num_batches_tracked may be there or not).
2. Conv biases. Every port conv has one; ours have none (BN's beta replaces it). The BN
   sees conv(x) + b, so b moves into the statistics: running_mean - b, all else equal.
3. Input. The port takes BGR pixels in 0-255 minus [104, 117, 128] (B, G, R), std 1; ours
   take RGB in 0-1 normalized by data.mean/std. For our x, the port's input is
   x_port = reorder(255 * (std * x + mean) - [128, 117, 104]) (now R, G, B), so the first
   conv gets its input channels reversed and scaled by 255 * std, and the constant
   255 * mean - [128, 117, 104], convolved (sum of each filter's weights per channel
   times it), joins the bias of step 2.

How exact: everywhere except the first conv's border. The port zero-pads its
mean-subtracted input, i.e. it pads the image with the colour [128, 117, 104]; ours
zero-pads the normalized input, i.e. pads with 255 * data.mean = [123.7, 116.3, 103.5].
Folded into a bias, the constant counts at the padded taps too, so the 7x7/2 conv's
outputs whose window reaches the 3-pixel padding (rows and columns 0, 1 and 111 of 112
at 224 px) compute as if the port had padded with a colour darker by (4.3, 0.7, 0.5)
grey levels (R, G, B). The difference does not depend on the image. With data.mean =
[128, 117, 104] / 255 (any std) the constant is zero and the conversion is exact up to
float32 rounding: `--mean 0.5019608 0.4588235 0.4078431` does that, and evaluation then
normalizes with it (the checkpoint says so).

Measured with random weights, calibrated BN and uniform-noise images at 224 px
(tests/models/test_caffe_port.py): with the port's mean the logits agree to 6e-6 of
their std (float32 rounding); with ImageNet's mean the first conv + BN agrees to 5e-6
inside and differs by up to 9% of its output's std in the border band, which reaches
the logits as 6e-3 of their std (max 0.034 on logits of std 5.7).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from pipeline.files import file_sha256
from pipeline.models.bn_inception import BNInception
from pipeline.models.layers import ConvBNAct
from pipeline.models.weights import save_weights

PORT_MEAN_BGR = (104.0, 117.0, 128.0)  # on 0-255 pixels, std 1
PORT_BN_EPS = 1e-5
FIRST_CONV = "features.conv1"
STEM = {"conv1": "conv1_7x7_s2", "conv2_reduce": "conv2_3x3_reduce", "conv2": "conv2_3x3"}
BRANCHES = {"branch1x1": "1x1", "branch3x3_reduce": "3x3_reduce", "branch3x3": "3x3",
            "branch3x3dbl_reduce": "double_3x3_reduce", "branch3x3dbl_1": "double_3x3_1",
            "branch3x3dbl_2": "double_3x3_2", "branch_pool.proj": "pool_proj"}
BN_KEYS = ("weight", "bias", "running_mean", "running_var")
HEAD = {"last_linear.weight": "fc.weight", "last_linear.bias": "fc.bias"}
SHOWN = 5  # keys named in an error


class PortError(ValueError):
    """The file is not the Caffe port's state dict; the message names the keys."""


def port_names(model: BNInception) -> dict[str, str]:
    """Our ConvBNAct path -> the port's conv name, for every conv of `model`."""
    return {path: _port_name(path) for path, module in model.named_modules()
            if isinstance(module, ConvBNAct)}


def _port_name(path: str) -> str:
    parts = path.split(".", 2)  # features.conv1 | features.inception_3a.branch_pool.proj
    if parts[0] == "features" and len(parts) == 2 and parts[1] in STEM:
        return STEM[parts[1]]
    if parts[0] == "features" and len(parts) == 3 and parts[2] in BRANCHES:
        return f"{parts[1]}_{BRANCHES[parts[2]]}"
    raise PortError(f"our layer {path} has no counterpart in the Caffe port")


def port_keys(names: dict[str, str]) -> dict[str, str]:
    """The port's state-dict keys -> ours, in our model's order; conv biases map to the BN
    running mean they are folded into."""
    keys = {}
    for path, name in names.items():
        keys[f"{name}.weight"] = f"{path}.conv.weight"
        keys[f"{name}.bias"] = f"{path}.bn.running_mean"
        keys.update({f"{name}_bn.{k}": f"{path}.bn.{k}" for k in BN_KEYS})
    return {**keys, **HEAD}


def read_port(file: Path) -> dict[str, Tensor]:
    """The state dict in `file`: plain, or under "state_dict"."""
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PortError(f"{file}: not a PyTorch state dict that loads without code ({first})"
                        ) from err
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        what = f"a dict with keys {list(obj)[:SHOWN]}" if isinstance(obj, Mapping) else \
            type(obj).__name__
        raise PortError(f"{file} holds {what}, not a state dict of tensors (plain or under "
                        "'state_dict')")
    return dict(obj)


def convert(port: Mapping[str, Tensor], mean: tuple[float, float, float],
            std: tuple[float, float, float], source: str = "the state dict"
            ) -> dict[str, Tensor]:
    """Our BNInception state dict from the port's, for RGB input normalized by mean/std."""
    head = port.get("last_linear.weight")
    model = BNInception(num_classes=head.shape[0] if head is not None and head.dim() == 2
                        else 1000, bn_eps=PORT_BN_EPS)
    names, ours = port_names(model), model.state_dict()
    keys = port_keys(names)
    _check_keys(port, keys, source)
    _check_shapes(port, keys, ours, source)
    state = {ours_key: port[key].float().clone() for key, ours_key in HEAD.items()}
    for path, name in names.items():
        weight, bias = port[f"{name}.weight"].double(), port[f"{name}.bias"].double()
        if path == FIRST_CONV:
            weight, bias = fold_input(weight, bias, mean, std)
        state[f"{path}.conv.weight"] = weight.float()
        state.update({f"{path}.bn.{k}": port[f"{name}_bn.{k}"].float().clone() for k in BN_KEYS})
        running_mean = port[f"{name}_bn.running_mean"].double() - bias  # BN saw conv(x) + b
        state[f"{path}.bn.running_mean"] = running_mean.float()
        tracked = port.get(f"{name}_bn.num_batches_tracked", torch.tensor(0))
        state[f"{path}.bn.num_batches_tracked"] = tracked.long().clone()
    if state.keys() != ours.keys():  # the table above and the model disagree: a bug here
        raise RuntimeError(f"conversion left {sorted(ours.keys() - state.keys())[:SHOWN]} "
                           f"unset and made {sorted(state.keys() - ours.keys())[:SHOWN]}")
    return state


def fold_input(weight: Tensor, bias: Tensor, mean: tuple[float, float, float],
               std: tuple[float, float, float]) -> tuple[Tensor, Tensor]:
    """The first conv for RGB 0-1 input normalized by mean/std, from the port's for BGR
    0-255 minus PORT_MEAN_BGR: exact but for the padding (module docstring)."""
    rgb = weight.flip(1)  # the port's input channels are B, G, R
    scale = 255 * torch.tensor(std, dtype=weight.dtype)
    shift = 255 * torch.tensor(mean, dtype=weight.dtype) - torch.tensor(PORT_MEAN_BGR[::-1],
                                                                         dtype=weight.dtype)
    return rgb * scale[None, :, None, None], bias + rgb.sum(dim=(2, 3)) @ shift


def import_caffe_port(file: Path, out: Path, mean: tuple[float, float, float],
                      std: tuple[float, float, float]) -> Path:
    """Converts `file` and writes it as a weights folder (pipeline/models/weights.py)."""
    file = Path(file)
    state = convert(read_port(file), mean, std, str(file))
    config = {"model": {"name": "bn_inception", "num_classes": state["fc.weight"].shape[0],
                        "bn": True, "act": "relu", "bn_eps": PORT_BN_EPS,
                        "separable_stem": False},
              "data": {"mean": list(mean), "std": list(std)}}
    source = {"kind": "caffe-port", "file": str(file.resolve()), "sha256": file_sha256(file),
              "input": "BGR 0-255 minus [104, 117, 128], std 1"}
    return save_weights(out, state, config, source)


def _check_keys(port: Mapping[str, Tensor], keys: dict[str, str], source: str) -> None:
    tracked = {f"{k.rsplit('.', 1)[0]}.num_batches_tracked" for k in keys if "_bn." in k}
    missing = [k for k in keys if k not in port]
    unexpected = [k for k in port if k not in keys and k not in tracked]
    if missing or unexpected:
        parts = [f"{len(found)} {what} (first: {', '.join(found[:SHOWN])})"
                 for what, found in (("keys missing", missing), ("unexpected keys", unexpected))
                 if found]
        raise PortError(f"{source} is not the BN-Inception Caffe port's state dict: "
                        f"{'; '.join(parts)}; it has {len(port)} keys, the port "
                        f"{len(keys)} (+ num_batches_tracked)")


def _check_shapes(port: Mapping[str, Tensor], keys: dict[str, str], ours: dict[str, Tensor],
                  source: str) -> None:
    wrong = [f"{key} {tuple(port[key].shape)}, expected {tuple(ours[ours_key].shape)}"
             for key, ours_key in keys.items() if port[key].shape != ours[ours_key].shape]
    if wrong:
        raise PortError(f"{source}: {len(wrong)} tensors have other shapes than "
                        f"BN-Inception's (first: {'; '.join(wrong[:SHOWN])})")
