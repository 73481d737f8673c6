"""How close each Keras architecture trains to this machine's peak float32 FLOP/s.

Peak: the best rate of a large float32 matmul in TensorFlow (``2 n**3`` FLOPs). Each
architecture: its published configuration's forward FLOPs per image (counted by TensorFlow's
profiler on the frozen graph of one image), training taken as three forward passes (the
backward pass costs about twice the forward), times the images per second it trains here
(:func:`runners.throughput.measure_throughput`: the trial's own input pipeline, augmentation
included) at its default batch size and at a larger one. The ratio to peak says where the time
goes: a small ratio is overhead (the input pipeline, small kernels, framework time per batch),
not arithmetic.

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


def peak_flops(*, n: int = 4096, seconds: float = 3.0) -> float:
    """The best float32 FLOP/s of ``n x n`` matmuls in TensorFlow over about ``seconds``."""
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=tf.float32)
    b = tf.random.normal((n, n), dtype=tf.float32)
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


def measure(arch: str, *, images, labels, peak: float, seconds: float) -> dict:
    from runners.data import IMAGE_SHAPE, NUM_CLASSES
    from runners.throughput import measure_throughput
    from runners.training import free_memory
    from spaces import ARCHITECTURES

    space = ARCHITECTURES[arch]
    row: dict = {"arch": arch}
    for label, batch in (("default", space.DEFAULTS["batch_size"]), ("large", LARGE_BATCH)):
        params = {**space.DEFAULTS, "batch_size": batch}
        model = space.build(params, input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES)
        if "forward_flops" not in row:
            row["forward_flops"] = forward_flops(model)
            row["params"] = model.count_params()
        rate = measure_throughput(model, params, images, labels, seconds=seconds)
        achieved = TRAIN_FORWARDS * row["forward_flops"] * rate.train_images_per_s
        row[label] = {
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
    parser.add_argument("--seconds", type=float, default=4.0, help="timed training per setting")
    add_results_dir(parser)
    args = parser.parse_args()
    archs = args.arch or list(ARCHS)
    size = 4096
    if args.quick:
        archs, args.seconds, size = ["mlp", "cnn"], 1.0, 1024

    from runners.data import load_fashion_mnist

    data = load_fashion_mnist()
    images, labels = data.x_train[:4096], data.y_train[:4096]
    peak = peak_flops(n=size, seconds=args.seconds)
    rows = [measure(a, images=images, labels=labels, peak=peak, seconds=args.seconds)
            for a in archs]  # fmt: skip
    lines = [
        f"Peak float32: {peak / 1e9:.1f} GFLOP/s (best {size}x{size} matmul in TensorFlow). "
        f"Training FLOP/s: {TRAIN_FORWARDS} x the forward FLOPs per image (TensorFlow's "
        "profiler) x training images per second (the published configuration through the "
        "trial's input pipeline, float32).",
        "",
        f"| arch | parameters | forward MFLOP/image | images/s (default batch) | GFLOP/s "
        f"| of peak | images/s (batch {LARGE_BATCH}) | GFLOP/s | of peak | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(
            f"| `{r['arch']}` | {r['params']:,} | {r['forward_flops'] / 1e6:.2f} "
            f"| {r['default']['train_images_per_s']:,.0f} (batch {r['default']['batch_size']}) "
            f"| {r['default']['train_flops_per_s'] / 1e9:.2f} "
            f"| {r['default']['share_of_peak']:.1%} | {r['large']['train_images_per_s']:,.0f} "
            f"| {r['large']['train_flops_per_s'] / 1e9:.2f} | {r['large']['share_of_peak']:.1%} "
            f"| {r['large']['train_images_per_s'] / r['default']['train_images_per_s']:.2f}x |"
            for r in rows
        ),
    ]
    path = write(
        "flops_quick" if args.quick else "flops",
        {"peak_flops_per_s": peak, "matmul_size": size, "results": rows},
        "\n".join(lines),
        directory=args.results_dir,
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
