"""Numeric precision of a trial's model: float32, or Keras mixed precision where it pays.

Mixed precision computes in 16 bits and keeps the weights in float32. On CPUs with native
bfloat16 (AMX, AVX512-BF16) the convolutional networks train faster under ``mixed_bfloat16``
(benchmarks/results/flops.md); CPUs without it emulate it, slower than float32. On GPUs,
``mixed_float16`` uses the tensor cores of any CUDA GPU since Volta, ``mixed_bfloat16`` those
since Ampere, without loss scaling. The softmax head stays float32 in every space
(``spaces.common.classifier_head``), so served probabilities are never rounded to 16 bits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

PRECISIONS = ("auto", "float32", "bfloat16", "float16")
_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
# CPU flags (Linux /proc/cpuinfo) of native bfloat16 arithmetic.
_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
# Ampere (compute capability 8.0) and later compute bfloat16 on their tensor cores.
_GPU_BF16_CAPABILITY = (8, 0)


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags; empty where the system does not list them."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def gpu_capabilities() -> list[tuple[int, int]]:
    """The CUDA compute capability of each GPU TensorFlow sees."""
    import tensorflow as tf

    found = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        found.append(tuple(details.get("compute_capability") or (0, 0)))
    return found


def resolve_policy(
    precision: str,
    *,
    gpus: Sequence[tuple[int, int]] | None = None,
    flags: frozenset[str] | None = None,
) -> str:
    """The Keras dtype policy for ``precision`` on this machine.

    ``auto`` is ``mixed_bfloat16`` on an Ampere or later GPU, ``mixed_float16`` on an older
    one, ``mixed_bfloat16`` on a CPU with native bfloat16, else ``float32``.

    Args:
        precision: One of ``PRECISIONS``.
        gpus: Compute capabilities of the GPUs (None: ask TensorFlow).
        flags: CPU flags (None: read ``/proc/cpuinfo``).

    Raises:
        ValueError: ``precision`` is not one of ``PRECISIONS``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return _POLICIES[precision]
    gpus = gpu_capabilities() if gpus is None else gpus
    if gpus:
        if min(gpus) >= _GPU_BF16_CAPABILITY:
            return "mixed_bfloat16"
        return "mixed_float16"
    flags = cpu_flags() if flags is None else flags
    return "mixed_bfloat16" if flags & _BF16_FLAGS else "float32"


@contextlib.contextmanager
def dtype_policy(policy: str) -> Iterator[None]:
    """Layers built inside take ``policy``; Keras' process-wide policy is restored after."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
