"""hardware.py: which processor a number was measured on, and the one-line bf16 warning.

The flags come from a fixed /proc/cpuinfo text here, so these tests give the same answer on every
machine; the real machine's keys are checked where they are written (metrics.json in test_cycle,
MLflow tags in test_mlflow_native, benchmark JSON in test_benchmarks_dry)."""

from __future__ import annotations

import pytest

from psreval_tune import hardware
from psreval_tune.config import resolve_device

AVX2_ONLY = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse4_2 avx avx2 fma bmi2\n\nprocessor\t: 1\n"
SAPPHIRE = (
    "model name\t: Intel Xeon Platinum 8480+\n"
    "flags\t: avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8\n"
)


def test_cpuinfo_is_parsed_from_the_first_processor():
    model, flags = hardware.parse_cpuinfo(AVX2_ONLY)
    assert model == "AMD EPYC 7B12" and {"avx2", "fma"} <= flags and "avx512f" not in flags
    assert hardware.parse_cpuinfo("") == (None, frozenset())


@pytest.mark.parametrize(
    "text, cap, bf16, vnni",
    [
        (AVX2_ONLY, "", False, False),  # the CPU of the issue: bf16 and int8 are emulated
        (SAPPHIRE, "", True, True),
        (SAPPHIRE, "ALL", True, True),
        (SAPPHIRE, "AVX512_CORE_VNNI", False, True),  # a cap below AVX512_CORE_BF16 takes bf16 away
        (SAPPHIRE, "AVX512_CORE", False, False),
        (SAPPHIRE, "avx2", False, False),  # oneDNN reads the value case-insensitively
    ],
)
def test_native_features_follow_the_flags_and_the_onednn_cap(text, cap, bf16, vnni):
    _, flags = hardware.parse_cpuinfo(text)
    assert hardware.native_features(flags, cap) == {"cpu_bf16_native": bf16, "cpu_int8_vnni": vnni}


def test_cpu_info_names_the_cap_it_ran_under(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    info = hardware.cpu_info()
    assert info["cpu_onednn_max_isa"] == "AVX2" and info["cpu_bf16_native"] is False
    assert {"cpu_model", "cpu_flags", "cpu_torch_capability", "cpu_int8_vnni"} <= set(info)
    assert info["cpu_torch_capability"] in {"DEFAULT", "AVX2", "AVX512", "ZVECTOR", "VSX", "SVE256", None}


def test_bf16_on_a_cpu_without_native_bf16_warns_once_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setattr(hardware, "_WARNED", set())
    assert resolve_device("cpu", "bf16") == "cpu"
    assert resolve_device("cpu", "bf16") == "cpu"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: precision=bf16 on a CPU without native bf16")
    resolve_device("cpu", "fp32")
    assert capsys.readouterr().err == ""  # fp32 never warns


def test_no_bf16_warning_where_bf16_is_native(monkeypatch, capsys):
    monkeypatch.setattr(hardware, "_static", lambda: hardware.parse_cpuinfo(SAPPHIRE))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(hardware, "_WARNED", set())
    resolve_device("cpu", "bf16")
    assert capsys.readouterr().err == ""
    assert hardware.bf16_note("cuda") is None  # a GPU's bf16 support is checked by resolve_device itself
