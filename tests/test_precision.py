"""Mixed precision (config.PRECISIONS): bf16 autocast for non-private local training only.

What must hold: the forward really runs in bf16 when asked (a test that cannot tell fp32 from bf16
would pass on a no-op), the model still trains, DP training is untouched (same key, same numbers),
and the twin of a DP trial is the one that gets bf16."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from psreval_tune.config import ConfigError, CycleConfig
from psreval_tune.cycle import _fresh_model
from psreval_tune.evaluate import accuracy
from psreval_tune.federated import Federation, autocast_dtype

pytestmark = pytest.mark.timeout(300)


def _forward_dtypes(fed: Federation) -> set[torch.dtype]:
    """The output dtypes of the conv and linear layers of every client during one round."""
    seen: set[torch.dtype] = set()
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
        for client in fed.clients
        for m in client.model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    try:
        fed.run_round(1)
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("precision, expected", [("fp32", {torch.float32}), ("bf16", {torch.bfloat16})])
def test_local_training_runs_in_the_precision_asked(small_cfg, digits, precision, expected):
    cfg = small_cfg.replace(precision=precision)
    fed = Federation(cfg, _fresh_model(cfg, digits), digits, "cpu")
    assert _forward_dtypes(fed) == expected
    # weights (and so the aggregated model and checkpoints) stay fp32 either way
    assert {p.dtype for p in fed.model.parameters()} == {torch.float32}


def test_dp_training_stays_fp32_and_the_twin_gets_bf16(small_cfg, digits):
    dp = small_cfg.replace(epsilon=8.0, precision="bf16")
    assert autocast_dtype(dp) is None and autocast_dtype(dp.replace(epsilon=None)) is torch.bfloat16
    fed = Federation(dp, _fresh_model(dp, digits), digits, "cpu")
    assert _forward_dtypes(fed) == {torch.float32}
    # the DP model is the same model as with fp32, the twin is not
    fp32 = small_cfg.replace(epsilon=8.0)
    assert dp.training_key() == fp32.training_key()
    assert dp.replace(epsilon=None).training_key() != fp32.replace(epsilon=None).training_key()


def test_fp32_keys_are_the_keys_from_before_the_field():
    # cached twins and stored trials from before precision existed stay valid
    cfg = CycleConfig(dataset="digits", arch="cnn")
    assert cfg.training_key() == CycleConfig(dataset="digits", arch="cnn", precision="fp32").training_key()
    assert "precision" in cfg.to_dict() and cfg.training_key() != cfg.replace(precision="bf16").training_key()


def _train(cfg, data):
    model = Federation(cfg, _fresh_model(cfg, data), data, "cpu").train().eval()
    return model, torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.slow  # 20 rounds; bf16 emulated on AVX2
def test_a_bf16_model_trains_far_above_chance_and_near_fp32(small_cfg, digits):
    """10 rounds of the digits cnn, seed 0, 359 test images. The bounds hold on every x86 CPU measured, with a
    margin: on an AVX512-BF16 CPU fp32 92.8% and bf16 82.2%; under ONEDNN_MAX_CPU_ISA=AVX2 and
    ATEN_CPU_CAPABILITY=avx2 (an AVX2-only CPU, where bf16 is emulated) fp32 92.5% and bf16 79.1% (the figures
    issue 28 saw on such a CPU). Over seeds 0-4 on one CPU the gap ran from -2.2 to +10.6 points, so a bf16
    model is not pinned closer to fp32 than that: fp32 >= 85%, bf16 >= 70% (chance is 10%), gap <= 20 points."""
    accs, weights = {}, {}
    for precision in ("fp32", "bf16"):
        model, weights[precision] = _train(small_cfg.replace(rounds=10, precision=precision), digits)
        accs[precision] = accuracy(model, digits.test.x, digits.test.y)
    assert accs["fp32"] >= 0.85 and accs["bf16"] >= 0.70, accs
    assert accs["fp32"] - accs["bf16"] <= 0.20, accs
    assert not torch.equal(weights["fp32"], weights["bf16"])


def test_bf16_training_is_deterministic_on_one_machine(small_cfg, digits):
    """The same config and seed give the same weights on one CPU, bf16 included (across CPUs they may not)."""
    cfg = small_cfg.replace(precision="bf16")
    assert torch.equal(_train(cfg, digits)[1], _train(cfg, digits)[1])


def test_bad_precision_is_a_one_line_error():
    with pytest.raises(ConfigError, match=r"precision='fp16' is not allowed; expected one of fp32, bf16"):
        CycleConfig(precision="fp16")
