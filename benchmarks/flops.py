"""How close each Keras architecture trains to this machine's peak float32 FLOP/s.

Peak: the best rate of a large matmul in TensorFlow (``2 n**3`` FLOPs), in float32 and, where
``--precision auto`` picks a mixed policy on this CPU, in bfloat16. Each architecture: its
published configuration's forward FLOPs per image (counted by TensorFlow's profiler on the
frozen graph of one image), training taken as three forward passes (the backward pass costs
about twice the forward), times the images per second it trains here
(:func:`runners.throughput.measure_throughput`: the trial's own input pipeline, augmentation
included): in float32 at its default batch size, in the policy trials use here (``auto``), and
in that policy at a larger batch. The ratio to peak says where the time goes: a small ratio is
overhead (the input pipeline, small kernels, framework time per batch), not arithmetic.

    python -m benchmarks.flops [--quick] [--arch cnn --arch vggbn] [--seconds 4]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from benchmarks.common import add_results_dir, write

ARCHS = ("mlp", "dnn", "cnn", "rnn", "resnet", "tinyvgg", "minicnn", "vggbn")
LARGE_BATCH = 512
# The backward pass costs about twice the forward (gradients for activations and weights).
TRAIN_FORWARDS = 3


def peak_flops(*, n: int = 4096, seconds: float = 3.0, dtype: str = "float32") -> float:
    """The best FLOP/s of ``n x n`` matmuls of ``dtype`` in TensorFlow over about ``seconds``."""
    import tensorflow as tf

    a = tf.cast(tf.random.normal((n, n)), dtype)
    b = tf.cast(tf.random.normal((n, n)), dtype)
    matmul = tf.function(lambda: tf.linalg.matmul(a, b))
    matmul().numpy()  # traces, and warms oneDNN up
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        matmul().numpy()
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def forward_flops(model) -> int:
    """FLOPs of one image's forward pass, counted by TensorFlow's profiler."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    spec = tf.TensorSpec((1, *model.input_shape[1:]), tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    graph = convert_variables_to_constants_v2(concrete).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(
        graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options
    )
    return int(profile.total_float_ops)


def measure(arch: str, *, images, labels, peak: float, policy: str, seconds: float) -> dict:
    from runners.data import IMAGE_SHAPE, NUM_CLASSES
    from runners.precision import dtype_policy
    from runners.throughput import measure_throughput
    from runners.training import free_memory
    from spaces import ARCHITECTURES

    space = ARCHITECTURES[arch]
    row: dict = {"arch": arch}
    default = space.DEFAULTS["batch_size"]
    settings = [("float32", "float32", default), ("auto", policy, default),
                ("large", policy, LARGE_BATCH)]  # fmt: skip
    for label, dtype, batch in settings:
        params = {**space.DEFAULTS, "batch_size": batch}
        with dtype_policy(dtype):
            model = space.build(params, input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES)
        if "forward_flops" not in row:
            row["forward_flops"] = forward_flops(model)
            row["params"] = model.count_params()
        rate = measure_throughput(model, params, images, labels, seconds=seconds)
        achieved = TRAIN_FORWARDS * row["forward_flops"] * rate.train_images_per_s
        row[label] = {
            "policy": dtype,
            "batch_size": batch,
            "train_images_per_s": rate.train_images_per_s,
            "eval_images_per_s": rate.eval_images_per_s,
            "train_flops_per_s": achieved,
            "share_of_peak": achieved / peak,
        }
        model = None
        free_memory()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="mlp and cnn, 1 s each")
    parser.add_argument("--arch", action="append", choices=ARCHS)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed training per setting")
    add_results_dir(parser)
    args = parser.parse_args()
    archs = args.arch or list(ARCHS)
    size = 4096
    if args.quick:
        archs, args.seconds, size = ["mlp", "cnn"], 1.0, 1024

    from runners.data import load_fashion_mnist
    from runners.precision import resolve_policy

    data = load_fashion_mnist()
    images, labels = data.x_train[:4096], data.y_train[:4096]
    policy = resolve_policy("auto")
    peak = peak_flops(n=size, seconds=args.seconds)
    peaks = {"float32": peak}
    if "bfloat16" in policy:
        peaks["bfloat16"] = peak_flops(n=size, seconds=args.seconds, dtype="bfloat16")
    rows = [measure(a, images=images, labels=labels, peak=peak, policy=policy,
                    seconds=args.seconds) for a in archs]  # fmt: skip

    def rate(r: dict, label: str) -> float:
        return r[label]["train_images_per_s"]

    lines = [
        "Peak: "
        + ", ".join(f"{dtype} {value / 1e9:.1f} GFLOP/s" for dtype, value in peaks.items())
        + f" (best {size}x{size} matmul in TensorFlow). Training FLOP/s: {TRAIN_FORWARDS} x "
        "the forward FLOPs per image (TensorFlow's profiler) x training images per second "
        "(the published configuration through the trial's input pipeline); share of the "
        f"float32 peak. `--precision auto` here: `{policy}`.",
        "",
        f"| arch | parameters | forward MFLOP/image | float32: images/s | GFLOP/s | of peak "
        f"| {policy}: images/s | speed-up | batch {LARGE_BATCH}: images/s | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(
            f"| `{r['arch']}` | {r['params']:,} | {r['forward_flops'] / 1e6:.2f} "
            f"| {rate(r, 'float32'):,.0f} (batch {r['float32']['batch_size']}) "
            f"| {r['float32']['train_flops_per_s'] / 1e9:.2f} "
            f"| {r['float32']['share_of_peak']:.1%} | {rate(r, 'auto'):,.0f} "
            f"| {rate(r, 'auto') / rate(r, 'float32'):.2f}x | {rate(r, 'large'):,.0f} "
            f"| {rate(r, 'large') / rate(r, 'float32'):.2f}x |"
            for r in rows
        ),
    ]
    path = write(
        "flops_quick" if args.quick else "flops",
        {"peak_flops_per_s": peaks, "policy": policy, "matmul_size": size, "results": rows},
        "\n".join(lines),
        directory=args.results_dir,
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
