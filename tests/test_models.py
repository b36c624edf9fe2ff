"""Every architecture passes Opacus' validator and static int8 quantization (torchao PT2E).

Shapes: 1-channel 8x8 (digits) and 3-channel 32x32 (CIFAR-10); 7 classes so
that nothing can silently assume 10. Models are plain PyTorch: no quant stubs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from opacus import GradSampleModule
from opacus.validators import ModuleValidator
from torch import nn

from psreval_tune import models
from psreval_tune.bookkeeping import unsupported
from psreval_tune.config import ARCHS, ConfigError, CycleConfig
from psreval_tune.models import ARCHITECTURES, Classifier, Normalize, build_model
from psreval_tune.privacy import check_model
from psreval_tune.quantize import Int8Model, bpda_model, quantize_static

NUM_CLASSES = 7
SHAPES = [(1, 8), (3, 32)]


def _model(arch: str, channels: int) -> Classifier:
    torch.manual_seed(0)
    return build_model(arch, channels, NUM_CLASSES, [0.4] * channels, [0.3] * channels)


@pytest.mark.timeout(60)
def test_config_archs_are_the_buildable_ones():
    assert set(ARCHS) == set(ARCHITECTURES) == {"cnn", "resnet9", "resnet18"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("channels,size", SHAPES)
@pytest.mark.parametrize("arch", ARCHS)
def test_opacus_compatible(arch, channels, size):
    model = _model(arch, channels)
    assert ModuleValidator.validate(model, strict=False) == []
    check_model(model)  # the library's own gate agrees
    assert unsupported(model) is None  # and book-keeping DP-SGD has a rule for every layer
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert all(not m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    # per-sample gradients actually work: one (N, *shape) grad_sample per weight
    gsm = GradSampleModule(model)
    x = torch.rand(3, channels, size, size)
    F.cross_entropy(gsm(x), torch.tensor([0, 1, 2])).backward()
    trainable = [p for p in gsm.parameters() if p.requires_grad]
    assert trainable
    for p in trainable:
        assert p.grad_sample is not None and p.grad_sample.shape == (3, *p.shape)


@pytest.mark.slow
@pytest.mark.timeout(180)  # ~5 s idle; HistogramObserver calibration is slow on a busy CPU
@pytest.mark.parametrize("channels,size", SHAPES)
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_and_static_quantization(arch, channels, size):
    model = _model(arch, channels).eval()
    x = torch.rand(7, channels, size, size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (7, NUM_CLASSES) and out.dtype == torch.float32
    assert torch.isfinite(out).all()

    qmodel = quantize_static(model, torch.rand(32, channels, size, size), batch_size=12)  # last batch smaller
    assert isinstance(qmodel, Int8Model)
    assert not any(isinstance(m, nn.Conv2d) for m in qmodel.modules())
    n_conv = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert sum(t.dtype == torch.int8 for t in qmodel.state_dict().values()) == n_conv + 1  # + the linear layer
    qmodel.eval()
    qmodel.train()  # harmless on an exported graph
    qmodel.eval()
    with torch.no_grad():
        qout = qmodel(x)
        qout1 = qmodel(x[:1])
    assert qout.shape == (7, NUM_CLASSES) and qout.dtype == torch.float32
    assert qout1.shape == (1, NUM_CLASSES)
    assert torch.allclose(qout1, qout[:1], atol=0.05)  # batch size does not change the int8 model
    # int8 logits track the float ones (observed cosine >= 0.997 on every arch/shape)
    cos = F.cosine_similarity(out.flatten(), qout.flatten(), dim=0)
    assert float(cos) >= 0.98, float(cos)
    # the BPDA twin computes the same logits and differentiates to the input
    bpda = bpda_model(qmodel)
    xg = x.clone().requires_grad_(True)
    bout = bpda(xg)
    assert torch.allclose(bout.detach(), qout, atol=1e-4)
    bout.sum().backward()
    assert float(xg.grad.abs().sum()) > 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("arch", ARCHS)
def test_normalize_is_the_models_first_layer(arch):
    mean, std = [0.2, 0.5, 0.7], [0.1, 0.3, 0.2]
    model = build_model(arch, 3, NUM_CLASSES, mean, std).eval()
    assert isinstance(model.normalize, Normalize)
    assert next(iter(model.children())) is model.normalize
    # statistics are buffers: they travel with the weights in the state_dict
    sd = model.state_dict()
    assert torch.equal(sd["normalize.mean"].flatten(), torch.tensor(mean))
    assert torch.equal(sd["normalize.std"].flatten(), torch.tensor(std))
    # a twin with identity normalisation, fed pre-normalised images, gives the same logits
    plain = build_model(arch, 3, NUM_CLASSES, [0.0] * 3, [1.0] * 3).eval()
    plain.load_state_dict({k: v for k, v in sd.items() if not k.startswith("normalize.")}, strict=False)
    x = torch.rand(4, 3, 32, 32)
    x_norm = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), plain(x_norm), atol=1e-5)
        assert not torch.allclose(model(x), plain(x), atol=1e-3)  # and it does matter


@pytest.mark.timeout(60)
def test_check_model_rejects_batchnorm():
    bad = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(ConfigError, match="not DP-compatible"):
        check_model(bad)


@pytest.mark.timeout(60)
def test_one_file_per_architecture():
    """Each architecture is one file of psreval_tune/models/, named as the architecture, registering it alone."""
    assert {e.name: e.obj.__module__ for e in models.ARCHS} == {n: f"psreval_tune.models.{n}" for n in ARCHS}


TOY_ARCH = '''
"""A toy architecture: added by this one file."""
from torch import nn

from psreval_tune.models import ARCHS
from psreval_tune.models._layers import conv_gn_relu


@ARCHS.register("toy", order=99, dp_compatible=True, s_per_pass=1 / 5000, dp_factor=2.0)
def toy(in_channels: int) -> tuple[nn.Module, nn.Module, int]:
    return conv_gn_relu(in_channels, 4), nn.AdaptiveAvgPool2d(1), 4
'''


@pytest.mark.timeout(60)
def test_one_file_adds_an_architecture(tmp_path, monkeypatch):
    """Adding an architecture is one file registering its builder: config validation takes its name (DP-SGD
    included, it is dp_compatible), build_model builds it, Opacus accepts it and it classifies. (test_registries
    adds one as models/tiny.py in a copy of the package, through the CLI help and the cost model too.)"""
    import importlib
    import sys

    (tmp_path / "toy_arch.py").write_text(TOY_ARCH)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("toy_arch")
    try:
        assert ARCHS[-1] == "toy" and "toy" in models.ARCHITECTURES
        cfg = CycleConfig(arch="toy", epsilon=3.4)
        assert cfg.arch == "toy" and cfg.private
        torch.manual_seed(0)
        model = build_model(cfg.arch, 1, NUM_CLASSES, [0.4], [0.3])
        check_model(model)  # Opacus' validator, on the model in training mode
        model.eval()
        x = torch.rand(5, 1, 8, 8)
        with torch.no_grad():
            out = model(x)
        assert out.shape == (5, NUM_CLASSES) and torch.isfinite(out).all()
        assert isinstance(model.normalize, Normalize) and model.fc.in_features == 4
    finally:
        models.ARCHS.unregister("toy")
        sys.modules.pop("toy_arch", None)
    with pytest.raises(ConfigError, match="^arch='toy' is not allowed"):
        CycleConfig(arch="toy")
    assert tuple(ARCHS) == ("cnn", "resnet9", "resnet18")
