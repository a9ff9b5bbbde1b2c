"""The Caffe port's weights, converted, give the port's logits; pipeline.evaluate measures them.

`CaffePort` is the port's layout written out from its published description
(pretrainedmodels' `bninception`): every conv has a bias and a BN `<name>_bn`, input is
BGR 0-255 minus [104, 117, 128]. It shares no code with pipeline.models.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline import evaluate
from pipeline.config import IMAGENET_MEAN, IMAGENET_STD, load_config, to_yaml
from pipeline.data import build_val_loader
from pipeline.files import seal
from pipeline.models import BNInception
from pipeline.models.__main__ import main as models_cli
from pipeline.models.caffe_port import PortError, convert, import_caffe_port, read_port
from pipeline.training import scoring
from pipeline.training.saving import save_torch
from pipeline.training.scoring import read_weights

MEAN_BGR = torch.tensor([104.0, 117.0, 128.0])
EXACT_MEAN = (128 / 255, 117 / 255, 104 / 255)  # the port's mean as our RGB 0-1 data.mean
# name, inputs, #1x1, #3x3 reduce, #3x3, double reduce, double 3x3, pool, projection
MODULES = (
    ("3a", 192, 64, 64, 64, 64, 96, "avg", 32),
    ("3b", 256, 64, 64, 96, 64, 96, "avg", 64),
    ("3c", 320, 0, 128, 160, 64, 96, "max/2", 0),
    ("4a", 576, 224, 64, 96, 96, 128, "avg", 128),
    ("4b", 576, 192, 96, 128, 96, 128, "avg", 128),
    ("4c", 576, 160, 128, 160, 128, 160, "avg", 128),
    ("4d", 608, 96, 128, 192, 160, 192, "avg", 128),
    ("4e", 608, 0, 128, 192, 192, 256, "max/2", 0),
    ("5a", 1056, 352, 192, 320, 160, 224, "avg", 128),
    ("5b", 1024, 352, 192, 320, 192, 224, "max", 128),
)


class CaffePort(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv("conv1_7x7_s2", 3, 64, 7, 2, 3)
        self.conv("conv2_3x3_reduce", 64, 64, 1)
        self.conv("conv2_3x3", 64, 192, 3, 1, 1)
        for m, cin, c1, r3, c3, rd, cd, pool, proj in MODULES:
            stride = 2 if pool == "max/2" else 1
            if c1:
                self.conv(f"inception_{m}_1x1", cin, c1, 1)
            self.conv(f"inception_{m}_3x3_reduce", cin, r3, 1)
            self.conv(f"inception_{m}_3x3", r3, c3, 3, stride, 1)
            self.conv(f"inception_{m}_double_3x3_reduce", cin, rd, 1)
            self.conv(f"inception_{m}_double_3x3_1", rd, cd, 3, 1, 1)
            self.conv(f"inception_{m}_double_3x3_2", cd, cd, 3, stride, 1)
            if proj:
                self.conv(f"inception_{m}_pool_proj", cin, proj, 1)
        self.last_linear = nn.Linear(1024, num_classes)

    def conv(self, name: str, cin: int, cout: int, k: int, stride: int = 1, pad: int = 0):
        setattr(self, name, nn.Conv2d(cin, cout, k, stride, pad))  # with a bias, as Caffe's
        setattr(self, f"{name}_bn", nn.BatchNorm2d(cout, eps=1e-5))

    def cbr(self, name: str, x: Tensor) -> Tensor:
        return F.relu(getattr(self, f"{name}_bn")(getattr(self, name)(x)))

    def inception(self, m: str, pool: str, x: Tensor) -> Tensor:
        p = f"inception_{m}_"
        out = [self.cbr(p + "1x1", x)] if hasattr(self, p + "1x1") else []
        out.append(self.cbr(p + "3x3", self.cbr(p + "3x3_reduce", x)))
        d = self.cbr(p + "double_3x3_1", self.cbr(p + "double_3x3_reduce", x))
        out.append(self.cbr(p + "double_3x3_2", d))
        if pool == "avg":
            y = F.avg_pool2d(x, 3, 1, 1, ceil_mode=True, count_include_pad=True)
        elif pool == "max":
            y = F.max_pool2d(x, 3, 1, 1, ceil_mode=True)
        else:
            y = F.max_pool2d(x, 3, 2, ceil_mode=True)
        out.append(self.cbr(p + "pool_proj", y) if hasattr(self, p + "pool_proj") else y)
        return torch.cat(out, 1)

    def forward(self, bgr: Tensor) -> Tensor:
        x = F.max_pool2d(self.cbr("conv1_7x7_s2", bgr), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.cbr("conv2_3x3", self.cbr("conv2_3x3_reduce", x)), 3, 2,
                         ceil_mode=True)
        for m, *_, pool, _ in MODULES:
            x = self.inception(m, pool, x)
        x = F.avg_pool2d(x, x.shape[2:])  # the port's 7x7 at 224 px; the whole grid at others
        return self.last_linear(x.flatten(1))


def random_port(num_classes: int, size: int, seed: int) -> CaffePort:
    """Random weights and biases; BN statistics from a batch, then moved off it."""
    torch.manual_seed(seed)
    port = CaffePort(num_classes)
    norms = [m for m in port.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for conv in (m for m in port.modules() if isinstance(m, nn.Conv2d)):
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            conv.bias.normal_(0, 2)
        for bn in norms:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0, 0.2)
            bn.momentum = None  # the running averages become this batch's statistics
        nn.init.normal_(port.last_linear.weight, std=1024**-0.5)
        port.train()(port_input(images(4, size, seed)))
        for bn in norms:
            bn.running_mean.add_(0.2 * bn.running_var.sqrt() * torch.randn_like(bn.running_mean))
            bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.6, 1.6))
    return port.eval()


def images(n: int, size: int, seed: int) -> Tensor:
    """RGB pixels 0-255."""
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 255


def port_input(rgb255: Tensor) -> Tensor:
    return rgb255.flip(1) - MEAN_BGR[None, :, None, None]


def our_input(rgb255: Tensor, mean, std) -> Tensor:
    mean, std = torch.tensor(mean)[None, :, None, None], torch.tensor(std)[None, :, None, None]
    return (rgb255 / 255 - mean) / std


def relative(a: Tensor, b: Tensor) -> float:
    return ((a - b).abs().max() / b.std()).item()


@pytest.fixture(scope="module")
def port() -> CaffePort:
    return random_port(1000, 224, seed=0)


@pytest.fixture(scope="module")
def port_file(port, tmp_path_factory):
    path = tmp_path_factory.mktemp("port") / "bn_inception-random.pth"
    torch.save(port.state_dict(), path)
    return path


def ours(state: dict) -> BNInception:
    model = BNInception(num_classes=state["fc.weight"].shape[0])
    model.load_state_dict(state)
    return model.eval()


@pytest.mark.parametrize("mean, std, tolerance", [
    (EXACT_MEAN, (0.2, 0.25, 0.3), 3e-5),  # no constant to fold: exact at the border too
    (IMAGENET_MEAN, IMAGENET_STD, 2e-2),   # the padding differs by (-4.3, -0.7, -0.5) levels
], ids=["port-mean", "imagenet-mean"])
def test_converted_logits_match_the_port(port, port_file, tmp_path, mean, std, tolerance):
    out = import_caffe_port(port_file, tmp_path / "out", mean, std)
    model = ours(read_weights(out).state)
    rgb = images(2, 224, seed=5)
    with torch.no_grad():
        expected, got = port(port_input(rgb)), model(our_input(rgb, mean, std))
    difference = relative(got, expected)
    print(f"mean {mean}: logits differ by {difference:.2e} of their std "
          f"(max abs {(got - expected).abs().max():.2e}, std {expected.std():.3f})")
    assert difference < tolerance
    assert got.argmax(1).tolist() == expected.argmax(1).tolist()


def test_the_first_conv_differs_only_where_its_window_reaches_the_padding(port):
    """Interior exact; on the border the difference is the constant's share at the padded
    taps, whatever the image."""
    model = ours(convert(port.state_dict(), IMAGENET_MEAN, IMAGENET_STD))
    rgb = images(2, 224, seed=6)
    conv, bn = port.conv1_7x7_s2, port.conv1_7x7_s2_bn
    with torch.no_grad():
        expected = bn(conv(port_input(rgb)))
        got = model.features.conv1.bn(model.features.conv1.conv(our_input(rgb, IMAGENET_MEAN,
                                                                           IMAGENET_STD)))
        shift = 255 * torch.tensor(IMAGENET_MEAN) - MEAN_BGR.flip(0)  # R, G, B
        band = F.pad(torch.zeros(1, 3, 224, 224), (3, 3, 3, 3), value=1) * shift[None, :, None,
                                                                                None]
        predicted = F.conv2d(band, conv.weight.flip(1), stride=2)
        predicted = predicted * (bn.weight / (bn.running_var + bn.eps).sqrt())[None, :, None, None]
    interior = (slice(None), slice(None), slice(2, 111), slice(2, 111))
    print(f"first conv + BN: interior {relative(got[interior], expected[interior]):.2e}, "
          f"border {relative(got, expected):.2e} of the output's std")
    assert relative(got[interior], expected[interior]) < 1e-5
    assert predicted[interior].abs().max() == 0 and predicted.abs().max() > 0
    torch.testing.assert_close(got - expected, predicted.expand_as(got), atol=1e-3, rtol=0)


def test_wrapped_files_and_missing_batch_counts_convert(port, tmp_path):
    plain = {k: v for k, v in port.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": plain, "epoch": 3}, tmp_path / "wrapped.pth")
    state = convert(read_port(tmp_path / "wrapped.pth"), IMAGENET_MEAN, IMAGENET_STD)
    assert state["features.conv1.bn.num_batches_tracked"] == 0
    torch.testing.assert_close(state["fc.weight"], port.last_linear.weight)
    # The conv bias is in BN's running mean; every other BN tensor is the port's.
    torch.testing.assert_close(state["features.inception_4e.branch3x3.bn.running_mean"],
                               port.inception_4e_3x3_bn.running_mean - port.inception_4e_3x3.bias)
    torch.testing.assert_close(state["features.inception_5b.branch_pool.proj.bn.running_var"],
                               port.inception_5b_pool_proj_bn.running_var)


def test_a_file_that_is_not_the_port_is_refused_naming_the_keys(port, tmp_path):
    state = port.state_dict()
    missing = {k: v for k, v in state.items() if k != "inception_4b_pool_proj_bn.running_var"}
    torch.save({**missing, "aux_classifier.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(PortError) as err:
        convert(read_port(tmp_path / "bad.pth"), IMAGENET_MEAN, IMAGENET_STD,
                str(tmp_path / "bad.pth"))
    assert str(tmp_path / "bad.pth") in str(err.value)
    assert "1 keys missing (first: inception_4b_pool_proj_bn.running_var)" in str(err.value)
    assert "1 unexpected keys (first: aux_classifier.weight)" in str(err.value)

    wrong = {**state, "inception_3a_3x3.weight": torch.zeros(64, 64, 1, 1)}
    with pytest.raises(PortError, match=r"inception_3a_3x3.weight \(64, 64, 1, 1\), "
                                        r"expected \(64, 64, 3, 3\)"):
        convert(wrong, IMAGENET_MEAN, IMAGENET_STD)

    torch.save({"model": state}, tmp_path / "other.pth")
    assert models_cli(["import-caffe-port", str(tmp_path / "other.pth"),
                       str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
    with pytest.raises(PortError, match=r"a dict with keys \['model'\], not a state dict"):
        read_port(tmp_path / "other.pth")


def test_the_cli_writes_a_weights_folder_once(port_file, tmp_path, capsys):
    out = tmp_path / "caffe"
    assert models_cli(["import-caffe-port", str(port_file), str(out)]) == 0
    info = json.loads((out / "model.json").read_text())
    assert info["config"]["data"] == {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    assert info["config"]["model"]["num_classes"] == 1000
    assert models_cli(["import-caffe-port", str(port_file), str(out)]) == 2
    assert "exists" in capsys.readouterr().err


# --- pipeline.evaluate on the sample shards (10 classes, 100 val images) ---------------------

EVAL = ["data.backend=webdataset", "data.image_size=96", "data.batch_size=50",
        "data.num_workers=1", "dist.device=cpu", "precision.autocast=float32"]


def top1_of_port(port: CaffePort, shards, overrides: list[str]) -> float:
    """The port itself on the val loader's images, turned back into its BGR 0-255 input."""
    cfg = load_config(None, [f"data.shards={shards}", *overrides])
    correct = count = 0
    mean = torch.tensor(cfg.data.mean)[None, :, None, None]
    std = torch.tensor(cfg.data.std)[None, :, None, None]
    with torch.no_grad():
        for x, labels, valid in build_val_loader(cfg.data, 0, 1, torch.device("cpu")):
            rgb255 = 255 * (x.float() * std + mean)
            hits = port(port_input(rgb255)).argmax(1) == labels
            correct, count = correct + hits[valid].sum().item(), count + valid.sum().item()
    return correct / count


def printed_top1(text: str) -> float:
    return float(re.search(r"val top-1 (\d\.\d+)", text).group(1))


def test_evaluate_measures_the_ports_top1_on_the_shards(sample_shards, tmp_path, capsys):
    port = random_port(10, 96, seed=1)
    torch.save(port.state_dict(), tmp_path / "port10.pth")
    out = import_caffe_port(tmp_path / "port10.pth", tmp_path / "caffe10", IMAGENET_MEAN,
                            IMAGENET_STD)
    argv = ["--checkpoint", str(out), f"data.shards={sample_shards}", *EVAL]
    assert evaluate.main(argv) == 0
    printed = capsys.readouterr().out
    assert "over 100 images" in printed and "images/s" in printed
    expected = top1_of_port(port, sample_shards, EVAL)
    assert printed_top1(printed) == pytest.approx(expected, abs=1e-4)
    assert evaluate.main([*argv, "model.separable_stem=true"]) == 2  # the port's is plain 7x7
    assert "features.conv1.depthwise.weight" in capsys.readouterr().err

    # The same weights in a trainer checkpoint, with the trainer's config (a 1000-class
    # model.num_classes there would be refused against the 10 classes).
    cfg = load_config(None, [f"data.shards={sample_shards}", *EVAL])
    tmp = tmp_path / "step-00000007.partial"
    tmp.mkdir()
    save_torch(tmp / "engine.pt", {"model": read_weights(out).state, "optimizer": {}})
    save_torch(tmp / "trainer.pt", {"state": {"step": 7}, "config": to_yaml(cfg)})
    seal(tmp, tmp_path / "step-00000007", "meta.json", {"step": 7, "top1": None})
    saved = read_weights(tmp_path / "step-00000007")
    metrics = scoring.measure(load_config(saved.config_file(), []), saved)
    assert metrics["val/top1"] == pytest.approx(expected, abs=1e-4)
    assert metrics["val/images"] == 100


def test_evaluate_refuses_weights_that_do_not_fit(port_file, sample_shards, tmp_path, capsys):
    out = import_caffe_port(port_file, tmp_path / "caffe", IMAGENET_MEAN, IMAGENET_STD)
    argv = ["--checkpoint", str(out), f"data.shards={sample_shards}", *EVAL]
    assert evaluate.main(argv) == 2  # 1000 classes against the shards' 10
    assert "model.num_classes = 1000, but the shards' classes.json has 10" in \
        capsys.readouterr().err
    assert evaluate.main(["--checkpoint", str(tmp_path / "nothing"), *argv[2:]]) == 2
    assert "no such folder" in capsys.readouterr().err
