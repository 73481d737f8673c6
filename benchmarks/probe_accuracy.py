"""Does the plan's probe say how fast the search's trials will train?

A budgeted search plans from one probe (:func:`runners.throughput.measure_throughput`, 4 s
on the published configuration), then trains other configurations for two hours. This
measures, per batch size of the space and with the classic augmentation off, the probe's
training rate against the same configuration's steady epochs (the median of the epochs
after the first, which traces) on a first rung's subset, in the policy trials use here
(``--precision auto``); and the probe held three times as long, in case the probe ends
before the machine settles. In the champion run of 2026-12-05 (an AMD EPYC with
AVX512-BF16, mixed bfloat16) the probe said 738 images/s where the trials' steady epochs
said about 960-1,090.

    python -m benchmarks.probe_accuracy [--quick] [--arch vggbn] [--fix width=0.5]
"""

from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import add_results_dir, write


def steady_rate(model, params: dict, images, labels, *, epochs: int) -> tuple[float, list]:
    """Training images per second of the epochs after the first (median), and every epoch's
    seconds: the trial's input pipeline, no validation."""
    import keras

    from benchmarks.trial_speed import EpochTimer
    from runners.augment import train_dataset
    from runners.data import NUM_CLASSES
    from runners.training import make_optimizer

    model.compile(optimizer=make_optimizer(params, total_steps=1000),
                  loss=keras.losses.CategoricalCrossentropy())  # fmt: skip
    dataset = train_dataset(images, labels, params=params, num_classes=NUM_CLASSES)
    timer = EpochTimer()
    model.fit(dataset, epochs=epochs, callbacks=[timer], shuffle=False, verbose=0)
    return len(images) / statistics.median(timer.seconds[1:]), timer.seconds


def measure(space, params: dict, *, policy: str, data, probe_seconds: float, images: int,
            epochs: int) -> dict:  # fmt: skip
    from runners.data import IMAGE_SHAPE, NUM_CLASSES
    from runners.precision import dtype_policy
    from runners.throughput import measure_throughput
    from runners.training import free_memory

    def build():
        with dtype_policy(policy):
            return space.build(params, input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES)

    probe_images, probe_labels = data.x_train[:4096], data.y_train[:4096]
    probes = []
    for seconds in (probe_seconds, 3 * probe_seconds):
        model = build()
        probes.append(measure_throughput(model, params, probe_images, probe_labels,
                                         seconds=seconds).train_images_per_s)  # fmt: skip
        model = None
        free_memory()
    model = build()
    steady, seconds = steady_rate(model, params, data.x_train[:images], data.y_train[:images],
                                  epochs=epochs)  # fmt: skip
    model = None
    free_memory()
    return {"probe": probes[0], "probe_longer": probes[1], "steady": steady,
            "epoch_seconds": seconds, "probe_over_steady": probes[0] / steady}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="mlp, one setting, 600 images")
    parser.add_argument("--arch", help="default: vggbn (mlp with --quick)")
    parser.add_argument(
        "--fix", action="append", metavar="NAME=VALUE",
        help="pin a parameter, as `fmsearch run --fix` (default for vggbn: width=0.5)",
    )  # fmt: skip
    add_results_dir(parser)
    args = parser.parse_args()

    from runners.data import load_fashion_mnist
    from runners.precision import resolve_policy
    from search.budget.costs import PROBE_SECONDS
    from search.budget.plan import rung_sizes
    from search.trials.choices import describe_space
    from search.trials.overrides import parse_fixed
    from spaces import resolve
    from spaces.common import BATCH_SIZES, NO_AUGMENTATION

    args.arch = args.arch or ("mlp" if args.quick else "vggbn")
    if args.fix is None:
        args.fix = ["width=0.5"] if args.arch == "vggbn" else []
    space = resolve(args.arch)
    base = {**space.DEFAULTS, **parse_fixed(args.fix, describe_space(space))}
    settings = [(f"batch {b}", {"batch_size": b}) for b in BATCH_SIZES]
    settings.append((f"batch {base['batch_size']}, no augmentation", NO_AUGMENTATION))
    # The first rung of a plan over 50,000 training images (5,556).
    probe_seconds, images, epochs = PROBE_SECONDS, rung_sizes(50_000)[0], 3
    if args.quick:
        settings, probe_seconds, images, epochs = settings[-1:], 0.5, 600, 2
    policy = resolve_policy("auto")
    data = load_fashion_mnist()
    rows = []
    for label, changes in settings:
        row = measure(space, {**base, **changes}, policy=policy, data=data,
                      probe_seconds=probe_seconds, images=images, epochs=epochs)  # fmt: skip
        rows.append({"setting": label, **row})
        print(label, f"probe {row['probe']:,.0f}, steady {row['steady']:,.0f} images/s",
              flush=True)  # fmt: skip
    lines = [
        f"`{args.arch}` ({', '.join(args.fix) or 'published configuration'}), policy "
        f"`{policy}` (`--precision auto` here). Probe: {probe_seconds:g} s of training after "
        f"3 warm-up batches, as the plan measures; steady: the median epoch after the first, "
        f"{epochs} epochs of {images:,} images.",
        "",
        f"| setting | probe {probe_seconds:g} s: images/s | probe {3 * probe_seconds:g} s "
        "| steady epochs | probe / steady |",
        "|---|---|---|---|---|",
        *(
            f"| {r['setting']} | {r['probe']:,.0f} | {r['probe_longer']:,.0f} "
            f"| {r['steady']:,.0f} | {r['probe_over_steady']:.2f} |"
            for r in rows
        ),
    ]
    path = write(
        "probe_accuracy_quick" if args.quick else "probe_accuracy",
        {
            "arch": args.arch,
            "fixed": args.fix,
            "policy": policy,
            "train_images": images,
            "results": rows,
        },
        "\n".join(lines),
        directory=args.results_dir,
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
