"""Which dtype policy each --precision resolves to, per machine, and that it stays scoped."""

from __future__ import annotations

import keras
import pytest

from runners.precision import cpu_flags, dtype_policy, resolve_policy


@pytest.mark.parametrize(
    ("precision", "gpus", "flags", "expected"),
    [
        ("float32", [(9, 0)], {"amx_bf16"}, "float32"),
        ("bfloat16", [], set(), "mixed_bfloat16"),
        ("float16", [], set(), "mixed_float16"),
        ("auto", [(8, 0)], set(), "mixed_bfloat16"),  # Ampere and later
        ("auto", [(7, 5)], {"amx_bf16"}, "mixed_float16"),  # a GPU wins over the CPU
        ("auto", [(9, 0), (7, 0)], set(), "mixed_float16"),  # the oldest GPU decides
        ("auto", [], {"sse2", "amx_bf16", "amx_tile"}, "mixed_bfloat16"),
        ("auto", [], {"avx512f", "avx512_bf16"}, "mixed_bfloat16"),
        ("auto", [], {"avx2", "avx512f"}, "float32"),  # bfloat16 would be emulated
    ],
)
def test_resolve_policy(precision, gpus, flags, expected):
    assert resolve_policy(precision, gpus=gpus, flags=frozenset(flags)) == expected


def test_unknown_precision():
    with pytest.raises(ValueError, match=r"one of auto, float32, bfloat16, float16, got 'fp8'"):
        resolve_policy("fp8", gpus=[], flags=frozenset())


def test_cpu_flags_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 amx_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(str(info)) == {"fpu", "sse2", "amx_bf16"}
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_policy_applies_inside_only():
    with dtype_policy("mixed_bfloat16"):
        inside = keras.layers.Dense(2)
    outside = keras.layers.Dense(2)
    assert inside.dtype_policy.name == "mixed_bfloat16" and inside.compute_dtype == "bfloat16"
    assert inside.variable_dtype == "float32"
    assert outside.dtype_policy.name == keras.config.dtype_policy().name == "float32"
