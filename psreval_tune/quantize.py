"""Static post-training int8 quantization (torchao PT2E), model sizes, and a BPDA view.

torch 2.13 deprecates its eager-mode quantization API (QuantStub,
FloatFunctional, module swapping by ``prepare``/``convert``) in favour of
torchao's PT2E flow, used here:
the float model is captured with ``torch.export`` (batch dimension dynamic),
``prepare_pt2e`` inserts observers where ``X86InductorQuantizer`` annotates
(convs, the linear layer, residual adds; normalisation and GroupNorm stay
float), activation ranges are calibrated on the public validation split, and
``convert_pt2e`` folds the weights to int8 constants, leaving
quantize/dequantize pairs on the activations. The result is wrapped in
:class:`Int8Model` so that callers can use it like any classifier. Because the
converted graph is made of ordinary aten ops, the int8 model can also be
attacked white-box: :func:`bpda_model` replaces every activation
quantize/dequantize pair by a fake-quantize whose gradient is the
straight-through estimator (BPDA, Athalye et al. 2018), so its forward is the
int8 model's and its input gradients are those of the float network seen
through the int8 rounding; without it, attacks on int8 models are transfer
attacks only.

That converted graph is the *reference* int8 model: int8 in size, but it runs
quantize/dequantize around fp32 kernels, so it is no faster than float.
:func:`lower_int8` gives the model that would be deployed: inductor
(``torch.compile`` with freezing, at a fixed batch of :data:`LOWERED_BATCH`,
shorter batches padded) pattern-matches the X86InductorQuantizer graph into
oneDNN int8 convolutions and linears (u8 activations, s8 weights, VNNI where the
CPU has it) with fused C++ kernels between them. It is still an
:class:`Int8Model` over the same reference graph (same state_dict, size,
``save_int8`` program and BPDA twin); only its forward runs the lowered code.
Where lowering is impossible (not an x86 CPU, no C++ compiler, a compile error)
the reference graph is used and the reason returned. :func:`latency_metrics`
times float against int8 at batch 1 and :data:`LOWERED_BATCH`.
"""

from __future__ import annotations

import copy
import io
import logging
import os
import platform
import time
import warnings

import torch
from torch import fx, nn
from torch.export import Dim

_Q = torch.ops.quantized_decomposed


class Int8Model(nn.Module):
    """An int8 classifier: ``[0, 1]`` images in, float logits out (on CPU).

    Wraps the converted PT2E ``GraphModule``, whose own ``train()``/``eval()``
    raise; here they only set the flag (the graph has no dropout or BatchNorm,
    so there is nothing to switch). Its remaining parameters (GroupNorm affine
    and the linear bias, float by design) never need gradients.
    """

    def __init__(self, graph_module: fx.GraphModule):
        super().__init__()
        self.graph_module = graph_module
        self.training = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph_module(x)

    def train(self, mode: bool = True) -> Int8Model:
        self.training = bool(mode)
        return self


LOWERED_BATCH = 256  # the lowered model's compiled batch: longer inputs run in chunks, shorter ones padded
_X86 = ("x86_64", "amd64", "i386", "i686", "x86")


class LoweredInt8Model(Int8Model):
    """The deployed int8 model: the reference graph's state (state_dict, size_bytes, save_int8 and bpda_model
    all see ``graph_module``, unchanged) with a forward that runs the inductor-lowered oneDNN int8 code.

    The compiled code has static shapes (inductor's int8 convolutions fail under a dynamic batch in this
    torch): every input runs in chunks of ``batch`` images, the last one padded with zeros and cut off again
    (each image's logits do not depend on the others in its batch), except a single image when batch 1 has
    been compiled (:meth:`compile_batch`). It runs under inference mode (one set of guards, no recompiles) and
    returns ordinary tensors. With gradients asked for (an input that requires grad) it runs the reference
    graph, whose rounding gives the same (zero) gradients as before; white-box attacks use bpda_model. A
    ``load_state_dict`` switches the lowered code off (it holds the old weights, frozen): lower again.
    """

    def __init__(self, graph_module: fx.GraphModule, compiled: nn.Module, batch: int = LOWERED_BATCH):
        super().__init__(graph_module)
        self.batch = batch
        # in a dict: neither a submodule nor a tensor of this module (size_bytes, state_dict stay the reference's)
        self._lowered: dict = {"fn": compiled, "batches": set(), "compile_s": 0.0}

    @property
    def compile_s(self) -> float:
        """Seconds spent compiling so far (every batch size compiled)."""
        return self._lowered["compile_s"]

    @property
    def lowered(self) -> bool:
        return self._lowered["fn"] is not None

    def compile_batch(self, batch: int) -> float:
        """Compile the code for ``batch`` images (LOWERED_BATCH or 1) if not done yet; returns the seconds."""
        if batch not in (1, self.batch):
            raise ValueError(f"LoweredInt8Model compiles batch 1 or {self.batch}, not {batch}")
        if batch in self._lowered["batches"] or not self.lowered:
            return 0.0
        start = time.perf_counter()
        with warnings.catch_warnings():
            # inductor's own oneDNN lowering copy-constructs a tensor (torch-internal, harmless)
            warnings.filterwarnings("ignore", message=r"To copy construct from a tensor", category=UserWarning)
            self._run(torch.zeros(batch, *_input_shape(self.graph_module)))
        self._lowered["batches"].add(batch)
        seconds = time.perf_counter() - start
        self._lowered["compile_s"] += seconds
        return seconds

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        import torch._inductor.config as inductor_config

        # freezing (weights as constants, prepacked for oneDNN) for this compile only, restored after
        with inductor_config.patch(freezing=True), torch.inference_mode():
            buf = torch.zeros(len(x), *x.shape[1:])  # a fresh contiguous float32 inference tensor: the same guards
            buf.copy_(x)
            out = self._lowered["fn"](buf)
        return out.clone()  # outside inference mode: an ordinary tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.lowered or (torch.is_grad_enabled() and x.requires_grad):
            return self.graph_module(x)
        x = x.detach().to("cpu", torch.float32)
        if len(x) == 1 and 1 in self._lowered["batches"]:
            return self._run(x)
        if self.batch not in self._lowered["batches"]:
            self.compile_batch(self.batch)
        outs = []
        for start in range(0, len(x), self.batch):
            chunk = x[start : start + self.batch]
            if len(chunk) < self.batch:
                chunk = torch.cat([chunk, chunk.new_zeros(self.batch - len(chunk), *chunk.shape[1:])])
            outs.append(self._run(chunk)[: min(self.batch, len(x) - start)])
        return torch.cat(outs) if outs else self.graph_module(x)

    def load_state_dict(self, *args, **kwargs):
        out = super().load_state_dict(*args, **kwargs)
        self._lowered.update(fn=None, batches=set())  # the compiled code froze the old weights
        return out


class BPDAModel(Int8Model):
    """The straight-through twin of an :class:`Int8Model` (see :func:`bpda_model`)."""


def _drop_unused_tensors(gm: fx.GraphModule) -> None:
    """Delete the parameters and buffers that the graph no longer reads.

    After ``convert_pt2e`` the float conv/linear weights are still attributes
    of the GraphModule (the graph reads their int8 copies instead); they would
    be shipped, and counted by size_bytes, for nothing.
    """
    used = {node.target for node in gm.graph.nodes if node.op == "get_attr"}
    for name, _ in list(gm.named_parameters(remove_duplicate=False)) + list(gm.named_buffers(remove_duplicate=False)):
        if name not in used:
            owner, _, attr = name.rpartition(".")
            module = gm.get_submodule(owner) if owner else gm
            delattr(module, attr)


def _activation_qparams_to_buffers(gm: fx.GraphModule) -> int:
    """Move each activation quantize/dequantize pair's scale and zero point from
    graph constants into buffers (``_act_scale_<i>``, ``_act_zero_point_<i>``).

    ``convert_pt2e`` writes them into the graph as Python numbers, where the
    state_dict does not see them; as buffers, ``state_dict()`` describes the
    whole int8 model, and ``load_state_dict`` into any quantize_static result of
    the same architecture reproduces it exactly. Returns the pair count.
    """
    count = 0
    for q in list(gm.graph.nodes):
        if q.op != "call_function" or q.target is not _Q.quantize_per_tensor.default:
            continue
        x, scale, zero_point, *rest = q.args
        scale_name, zp_name = f"_act_scale_{count}", f"_act_zero_point_{count}"
        # float64 and int64 hold the Python numbers exactly (the ops .item() them back).
        gm.register_buffer(scale_name, torch.tensor(float(scale), dtype=torch.float64))
        gm.register_buffer(zp_name, torch.tensor(int(zero_point), dtype=torch.int64))
        with gm.graph.inserting_before(q):
            scale_node, zp_node = gm.graph.get_attr(scale_name), gm.graph.get_attr(zp_name)
            new_q = gm.graph.call_function(_Q.quantize_per_tensor.tensor, (x, scale_node, zp_node, *rest))
        for dq in list(q.users):
            if dq.op != "call_function" or dq.target is not _Q.dequantize_per_tensor.default:
                raise RuntimeError(f"quantize_static: {q.name} feeds {dq.format_node()}, not a dequantize")
            if tuple(dq.args[1:3]) != (scale, zero_point):
                raise RuntimeError(f"quantize_static: {dq.name} dequantizes with other parameters than {q.name}")
            with gm.graph.inserting_before(dq):
                new_dq = gm.graph.call_function(
                    _Q.dequantize_per_tensor.tensor, (new_q, scale_node, zp_node, *dq.args[3:]), dict(dq.kwargs)
                )
            dq.replace_all_uses_with(new_dq)
            gm.graph.erase_node(dq)
        gm.graph.erase_node(q)
        count += 1
    gm.graph.lint()
    gm.recompile()
    return count


def quantize_static(model: nn.Module, calibration: torch.Tensor, batch_size: int = 256) -> nn.Module:
    """Return an int8 copy of ``model`` (left untouched), calibrated on ``calibration``.

    The copy runs on CPU in eval mode, on ``[0, 1]`` images of any batch size.
    """
    # torchao's first import logs a warning for each optional CUDA kernel library
    # a CPU machine cannot load (mxfp8, cutlass) and one about an enum it
    # registers with torch's pytree; none concerns PT2E quantization.
    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer,
            get_default_x86_inductor_quantization_config,
        )
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)

    if len(calibration) == 0:
        raise ValueError("quantize_static needs at least one calibration image")
    calibration = calibration.detach().cpu().float()
    float_copy = copy.deepcopy(model).cpu().eval()
    for p in float_copy.parameters():
        p.requires_grad_(False)
    # An example batch of 2 (not 0 or 1, which export would specialise on) with
    # a symbolic batch size: calibration and evaluation batches vary.
    example = calibration[:2] if len(calibration) >= 2 else calibration[:1].expand(2, *calibration.shape[1:])
    exported = torch.export.export(float_copy, (example.contiguous(),), dynamic_shapes=({0: Dim("batch")},))
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    with warnings.catch_warnings():
        # max pooling of a float (GroupNorm -> ReLU) activation stays float: expected
        warnings.filterwarnings("ignore", message=r"The input of \w+ is not quantized")
        prepared = prepare_pt2e(exported.module(), quantizer)
    with torch.no_grad():
        for start in range(0, len(calibration), batch_size):
            prepared(calibration[start : start + batch_size])
    converted = convert_pt2e(prepared)
    _drop_unused_tensors(converted)
    _activation_qparams_to_buffers(converted)
    for p in converted.parameters():
        p.requires_grad_(False)
    return Int8Model(converted)


def _baked_qparams(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of a quantize_static graph whose activation quantize/dequantize pairs read their scale and
    zero point as numbers again (the ``.default`` overloads convert_pt2e wrote), the form inductor's x86
    int8 patterns match; the buffers of _activation_qparams_to_buffers are dropped from the copy."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec", category=FutureWarning)
        gm = copy.deepcopy(gm)
    overloads = {
        _Q.quantize_per_tensor.tensor: _Q.quantize_per_tensor.default,
        _Q.dequantize_per_tensor.tensor: _Q.dequantize_per_tensor.default,
    }
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in overloads:
            continue
        x, scale, zero_point, *rest = node.args
        scale = float(gm.get_buffer(scale.target).item())
        zero_point = int(gm.get_buffer(zero_point.target).item())
        with gm.graph.inserting_before(node):
            new = gm.graph.call_function(overloads[node.target], (x, scale, zero_point, *rest), dict(node.kwargs))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
    for node in list(gm.graph.nodes):
        if node.op == "get_attr" and not node.users:
            gm.graph.erase_node(node)
            owner, _, attr = node.target.rpartition(".")
            if hasattr(gm.get_submodule(owner) if owner else gm, attr):
                delattr(gm.get_submodule(owner) if owner else gm, attr)
    gm.graph.lint()
    gm.recompile()
    return gm


def cannot_lower() -> str | None:
    """Why :func:`lower_int8` cannot run here (None when it can): the x86 int8 kernels and a C++ compiler."""
    machine = platform.machine()
    if machine.lower() not in _X86:
        return f"not an x86 CPU ({machine}): X86InductorQuantizer's oneDNN int8 kernels are x86 only"
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as exc:  # InvalidCxxCompiler and whatever the search raises
        return f"no C++ compiler for inductor ({type(exc).__name__})"
    return None


def lower_int8(model: Int8Model, batch: int = LOWERED_BATCH) -> tuple[Int8Model, str | None]:
    """The deployed form of a :func:`quantize_static` result: ``(lowered model, None)``, compiled for
    ``batch`` images (its ``compile_s`` says how long that took); or ``(model, why)`` where it cannot be
    lowered here, ``model`` being the reference graph itself.

    ``torch.compile`` (inductor, static shapes) with ``torch._inductor.config.freezing`` set for the compile
    only: inductor's freezing passes (registered by torchao's x86 quantizer module) fold each
    dequantize -> conv/linear -> quantize pattern into ``onednn.qconv_pointwise`` / ``qlinear_pointwise``
    with prepacked int8 weights. Inductor's FX graph cache keys frozen weights by their shapes, so a second
    model of the same architecture (the twin, another trial on the machine) reuses the compiled code.
    """
    if not isinstance(model, Int8Model):
        raise TypeError(f"lower_int8 needs a quantize_static result, got {type(model).__name__}")
    why = cannot_lower()
    if why is not None:
        return model, why
    try:
        lowered = LoweredInt8Model(
            model.graph_module, torch.compile(_baked_qparams(model.graph_module), dynamic=False), batch
        )
        lowered.compile_batch(batch)
    except Exception as exc:  # any compile failure: the reference graph still computes the same int8 model
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return model, f"inductor lowering failed: {type(exc).__name__}: {first[:200]}"
    return lowered, None


def _median_ms(fn, x: torch.Tensor, repeats: int, warmup: int) -> float:
    with torch.inference_mode():
        for _ in range(warmup):
            fn(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2]


def latency_metrics(
    float_model: nn.Module,
    int8_model: nn.Module,
    batches: tuple[int, ...] = (1, LOWERED_BATCH),
    repeats: int = 3,
    warmup: int = 1,
    repeats_b1: int = 10,
) -> dict[str, float]:
    """Median milliseconds per batch of the float model and the int8 model, on CPU, at each of ``batches``:
    ``latency_ms_{float,int8}_b<batch>``, and ``throughput_int8_over_float`` (float ms / int8 ms at the
    largest batch: > 1 when int8 is faster). ``repeats`` timed calls (``repeats_b1`` at batch 1, where a call
    costs little and a busy machine's time slices scatter most) after ``warmup`` untimed ones, on
    images from a local generator (the global RNG is left alone). A lowered int8 model compiles any batch
    it has not yet (batch 1) first, untimed: its compile_s counts it."""
    shape = _input_shape(int8_model.graph_module)
    cpu_float = float_model if all(p.device.type == "cpu" for p in float_model.parameters()) else None
    if cpu_float is None:
        cpu_float = copy.deepcopy(float_model).cpu()
    was_training = cpu_float.training
    cpu_float.eval()
    gen = torch.Generator().manual_seed(0)
    metrics: dict[str, float] = {}
    try:
        for batch in batches:
            if isinstance(int8_model, LoweredInt8Model) and batch in (1, int8_model.batch):
                int8_model.compile_batch(batch)
            x = torch.rand(batch, *shape, generator=gen)
            for kind, model in (("float", cpu_float), ("int8", int8_model)):
                n = repeats_b1 if batch == 1 else repeats
                metrics[f"latency_ms_{kind}_b{batch}"] = _median_ms(model, x, n, warmup)
    finally:
        cpu_float.train(was_training)
    top = max(batches)
    metrics["throughput_int8_over_float"] = metrics[f"latency_ms_float_b{top}"] / metrics[f"latency_ms_int8_b{top}"]
    return metrics


def save_int8(model: nn.Module, path: str | os.PathLike) -> None:
    """Write an :class:`Int8Model` as a self-contained ``torch.export`` program
    (``.pt2``: graph, int8 weights and activation scales; no Python code)."""
    if not isinstance(model, Int8Model):
        raise TypeError(f"save_int8 needs a quantize_static result, got {type(model).__name__}")
    gm = model.graph_module
    example = torch.zeros(2, *_input_shape(gm))  # batch 2: kept symbolic below
    exported = torch.export.export(gm, (example,), dynamic_shapes=({0: Dim("batch")},))
    torch.export.save(exported, path)


def load_int8(path: str | os.PathLike) -> Int8Model:
    """Read a :func:`save_int8` file back: the same logits, and bpda_model works on it."""
    # The program's nodes call torch.ops.quantized_decomposed.*, which exist only once this module has
    # registered them: a fresh process (psreval xseed after a sweep) that never quantized failed here with
    # torch.export's "failed to resolve torch.ops.quantized_decomposed.dequantize_per_channel".
    import torch.ao.quantization.fx._decomposed  # noqa: F401

    return Int8Model(torch.export.load(path).module())


def _input_shape(gm: fx.GraphModule) -> tuple[int, ...]:
    """(C, H, W) of the images the exported graph was captured for."""
    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    return tuple(int(d) for d in placeholder.meta["val"].shape[1:])


def _held_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Every tensor the model holds, once: parameters, buffers (persistent or
    not) and plain tensor attributes of its submodules."""
    seen: dict[int, torch.Tensor] = {}
    for module in model.modules():
        candidates = list(module._parameters.values()) + list(module._buffers.values())
        candidates += [v for v in vars(module).values() if isinstance(v, torch.Tensor)]
        for t in candidates:
            if t is not None:
                seen.setdefault(id(t), t)
    return list(seen.values())


def size_bytes(model: nn.Module) -> int:
    """Bytes of the serialized weights (what a client would ship or store).

    For an :class:`Int8Model` these are the int8 weight constants, their
    per-channel scales and zero points, and the float GroupNorm/bias/
    normalisation tensors; shared storage is written once.
    """
    buf = io.BytesIO()
    torch.save([t.detach() for t in _held_tensors(model)], buf)
    return buf.tell()


def _fake_quantize_activations(gm: fx.GraphModule) -> int:
    """Replace each ``quantize_per_tensor -> dequantize_per_tensor`` pair on a
    computed activation by ``fake_quantize_per_tensor_affine`` (same forward,
    straight-through gradient masked outside the int8 range). Weight
    dequantizes read constants and stay as they are. Returns the pair count."""
    quantize_ops = {_Q.quantize_per_tensor.default, _Q.quantize_per_tensor.tensor}
    dequantize_ops = {_Q.dequantize_per_tensor.default, _Q.dequantize_per_tensor.tensor}
    replaced = 0
    for q in list(gm.graph.nodes):
        if q.op != "call_function" or q.target not in quantize_ops:
            continue
        x, scale, zero_point, quant_min, quant_max = q.args[:5]
        if isinstance(x, fx.Node) and x.op == "get_attr":
            continue  # a constant (unfolded weight): no gradient needed
        # Bake the current parameters in (the .tensor overload reads them from buffers).
        if isinstance(scale, fx.Node):
            scale = float(gm.get_buffer(scale.target).item())
        if isinstance(zero_point, fx.Node):
            zero_point = int(gm.get_buffer(zero_point.target).item())
        dequantizes = [u for u in q.users if u.op == "call_function" and u.target in dequantize_ops]
        if not dequantizes or len(dequantizes) != len(q.users):
            raise RuntimeError(f"bpda_model: {q.name} feeds something other than a dequantize")
        for dq in dequantizes:
            with gm.graph.inserting_before(dq):
                fq = gm.graph.call_function(
                    torch.fake_quantize_per_tensor_affine, (x, scale, zero_point, quant_min, quant_max)
                )
            dq.replace_all_uses_with(fq)
            gm.graph.erase_node(dq)
            replaced += 1
        gm.graph.erase_node(q)
    for node in list(gm.graph.nodes):  # the get_attr nodes of the baked-in parameters
        if node.op == "get_attr" and not node.users:
            gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
    return replaced


def bpda_model(int8_model: nn.Module) -> nn.Module:
    """A differentiable twin of ``int8_model`` for white-box attacks (BPDA).

    Forward: the int8 model's logits (equal up to float rounding). Backward:
    straight-through through every activation quantize/dequantize, so
    gradients reach the input; parameters stay frozen. ``int8_model`` (a
    :func:`quantize_static` result) is not modified; the twin holds a copy of
    its current weights and activation scales (rebuild it after a
    ``load_state_dict`` into the int8 model).
    """
    gm = int8_model.graph_module if isinstance(int8_model, Int8Model) else int8_model
    if not isinstance(gm, fx.GraphModule):
        raise TypeError(f"bpda_model needs a quantize_static result, got {type(int8_model).__name__}")
    with warnings.catch_warnings():
        # deep-copying the graph's pytree specs trips a torch-internal FutureWarning
        warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec", category=FutureWarning)
        gm = copy.deepcopy(gm)
    if _fake_quantize_activations(gm) == 0:
        raise ValueError("bpda_model: the graph has no activation quantization to bypass")
    for p in gm.parameters():
        p.requires_grad_(False)
    return BPDAModel(gm)
