"""The pictures Fashion-MNIST practitioners draw by hand: curves, grids, maps, charts.

Every function returns a bare matplotlib ``Figure`` (never pyplot: no global figure registry to
leak across trials or threads); the caller saves or logs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from runners.calibration import Reliability


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def training_curves(history: Mapping[str, Sequence[float]], *, title: str) -> Figure:
    """Loss and accuracy per epoch, training against validation.

    Args:
        history: MLflow metric names (``train_loss``, ``val_loss``, ``train_accuracy``,
            ``val_accuracy``) to their per-epoch values; missing ones are left out.
        title: The figure's title.
    """
    fig = _figure(10, 4)
    axes = fig.subplots(1, 2)
    for ax, quantity in zip(axes, ("loss", "accuracy"), strict=True):
        for split, style in (("train", "-"), ("val", "--")):
            values = history.get(f"{split}_{quantity}")
            if values:
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, style, marker="o", label=f"{split} {quantity}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(quantity)
        ax.grid(alpha=0.3)
        if ax.lines:  # scikit-learn trials have no loss curve
            ax.legend()
    fig.suptitle(title)
    return fig


def image_grid(
    images: np.ndarray,
    *,
    titles: Sequence[str],
    title: str,
    wrong: Sequence[bool] | None = None,
    ncols: int = 8,
) -> Figure:
    """Images in a grid, each with a caption; captions of ``wrong`` images in red.

    Args:
        images: ``(N, 28, 28)`` pixels, uint8 or floats in [0, 1].
        titles: One caption per image.
        title: The figure's title.
        wrong: Per image, whether to mark its caption as a mistake.
        ncols: Images per row.
    """
    n = len(images)
    if len(titles) != n:
        raise ValueError(f"expected one title per image ({n}), got {len(titles)}")
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    height = 1.9 * nrows + 0.4
    # Fixed margins, not the constrained layout: its solver over 32 captioned axes costs as
    # much as drawing them.
    fig = Figure(figsize=(1.6 * ncols, height))
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.75 / height, bottom=0.1 / height,
                        wspace=0.1, hspace=0.45)  # fmt: skip
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i], cmap="gray_r")
        color = "crimson" if wrong is not None and wrong[i] else "black"
        ax.set_title(titles[i], fontsize=7, color=color)
    fig.suptitle(title)
    return fig


def confused_pairs_figure(
    pairs: Sequence[tuple[str, str, int]], *, total: int, title: str
) -> Figure:
    """Horizontal bars: how many test images of one class were taken for another."""
    fig = _figure(8, 0.4 * max(len(pairs), 1) + 1.2)
    ax = fig.add_subplot()
    labels = [f"{true} \u2192 {predicted}" for true, predicted, _ in pairs]
    counts = [count for _, _, count in pairs]
    bars = ax.barh(labels[::-1], counts[::-1], color="tab:red")
    ax.bar_label(bars, labels=[f"{c} ({100 * c / total:.1f}%)" for c in counts[::-1]], padding=3)
    ax.set_xlabel(f"test images (of {total})")
    ax.set_title(title)
    ax.margins(x=0.2)
    return fig


def class_distribution(
    counts: Mapping[str, np.ndarray], *, class_names: Sequence[str], title: str
) -> Figure:
    """Images per class in each data split, side by side."""
    fig = _figure(11, 4.5)
    ax = fig.add_subplot()
    width = 0.8 / max(len(counts), 1)
    x = np.arange(len(class_names))
    for i, (split, values) in enumerate(counts.items()):
        bars = ax.bar(x + i * width, values, width, label=f"{split} ({int(np.sum(values))})")
        ax.bar_label(bars, fontsize=6, rotation=90, padding=2)
    ax.set_xticks(x + width * (len(counts) - 1) / 2, list(class_names), rotation=30)
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend()
    ax.margins(y=0.15)
    return fig


def samples_per_class(
    images: np.ndarray, labels: np.ndarray, *, class_names: Sequence[str], per_class: int = 8
) -> Figure:
    """The first ``per_class`` images of each class, one class per row."""
    nrows = len(class_names)
    fig = _figure(1.1 * per_class + 1.5, 1.1 * nrows)
    axes = fig.subplots(nrows, per_class, squeeze=False)
    for row, name in enumerate(class_names):
        members = np.flatnonzero(labels == row)[:per_class]
        for col in range(per_class):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col < len(members):
                ax.imshow(images[members[col]], cmap="gray_r")
            if col == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle("Fashion-MNIST: samples per class")
    return fig


def bar_chart(
    names: Sequence[str], values: Sequence[float], *, ylabel: str, title: str, digits: int = 4
) -> Figure:
    """One bar per name, its value written on top; the y axis starts near the lowest value."""
    fig = _figure(max(6, 0.9 * len(names) + 2), 4.5)
    ax = fig.add_subplot()
    bars = ax.bar(list(names), list(values), color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.{digits}f}" for v in values], padding=2, fontsize=8)
    if len(values):
        low, high = min(values), max(values)
        spread = max(high - low, 0.01 * max(abs(high), 1e-9))
        ax.set_ylim(max(0.0, low - spread), high + 0.4 * spread)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=30)
    return fig


def lr_range(
    learning_rates: np.ndarray,
    losses: np.ndarray,
    *,
    smoothed: np.ndarray,
    suggested: tuple[float, float],
    title: str,
) -> Figure:
    """Loss against a rising learning rate (log axis), with the suggested range shaded."""
    fig = _figure(8, 4.5)
    ax = fig.add_subplot()
    ax.plot(learning_rates, losses, color="0.75", label="loss per batch")
    ax.plot(learning_rates, smoothed, color="tab:blue", label="smoothed")
    ax.axvspan(*suggested, color="tab:green", alpha=0.2,
               label=f"suggested {suggested[0]:.2g} to {suggested[1]:.2g}")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    finite = smoothed[np.isfinite(smoothed)]
    if finite.size:
        ax.set_ylim(0, min(float(np.nanmax(losses[np.isfinite(losses)])), 3 * float(finite[0])))
    ax.set_title(title)
    ax.legend()
    return fig


def reliability_diagram(curves: Mapping[str, Reliability], *, title: str) -> Figure:
    """Accuracy against confidence per bin, one curve per model (e.g. before and after
    temperature scaling), beside the diagonal of a calibrated model."""
    fig = _figure(5.5, 5)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", label="calibrated")
    for label, bins in curves.items():
        ax.plot(bins.confidence, bins.accuracy, marker="o", label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend()
    return fig


def explanation(
    image: np.ndarray,
    *,
    saliency: np.ndarray,
    lime_mask: np.ndarray | None,
    title: str,
    saliency_name: str = "occlusion",
) -> Figure:
    """The image, its saliency map over it, and the superpixels LIME found for the class."""
    panels = 3 if lime_mask is not None else 2
    fig = _figure(3.3 * panels, 3.6)
    axes = fig.subplots(1, panels)
    axes[0].imshow(image, cmap="gray_r")
    axes[0].set_title("image")
    axes[1].imshow(image, cmap="gray_r")
    shown = axes[1].imshow(saliency, cmap="inferno", alpha=0.6)
    fig.colorbar(shown, ax=axes[1], fraction=0.046)
    axes[1].set_title(f"{saliency_name}: drop in probability")
    if lime_mask is not None:
        axes[2].imshow(image, cmap="gray_r")
        chosen = np.ma.masked_where(lime_mask == 0, np.ones(lime_mask.shape))
        axes[2].imshow(chosen, cmap="summer", alpha=0.55, vmin=0, vmax=1)
        axes[2].contour(lime_mask > 0, levels=[0.5], colors="darkgreen", linewidths=1)
        axes[2].set_title("LIME: superpixels for the class")
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title)
    return fig


def embedding(
    points: np.ndarray, labels: np.ndarray, *, class_names: Sequence[str], title: str
) -> Figure:
    """A 2-d map of feature vectors, one colour per true class."""
    fig = _figure(9, 8)
    ax = fig.add_subplot()
    for index, name in enumerate(class_names):
        members = labels == index
        ax.scatter(points[members, 0], points[members, 1], s=4, alpha=0.6, label=name,
                   color=f"C{index}")  # fmt: skip
    ax.legend(markerscale=4, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    return fig


def model_pictures(
    *,
    images: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
    class_names: tuple[str, ...],
    history: Mapping[str, Sequence[float]],
    title: str,
    n_images: int = 32,
) -> dict[str, Figure]:
    """The pictures of one model judged on a labelled set, by artifact name.

    Training curves (when ``history`` has any), raw and normalized confusion matrices, the most
    confused class pairs, the most confident mistakes and a sample of predictions, each image
    captioned with its true and predicted class and the model's confidence.
    """
    from runners.metrics import confused_pairs, confusion_figure, evaluate_predictions

    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    evaluation = evaluate_predictions(labels, predicted, class_names=class_names)
    figures: dict[str, Figure] = {}
    if history:
        figures["training_curves"] = training_curves(history, title=f"{title}: training curves")
    figures["confusion_matrix"] = confusion_figure(
        evaluation.confusion,
        class_names=class_names,
        title=f"{title}: accuracy {evaluation.accuracy:.4f} on {len(labels)} images",
    )
    figures["confusion_matrix_normalized"] = confusion_figure(
        evaluation.confusion,
        class_names=class_names,
        title=f"{title}: share of each true class",
        normalize=True,
    )
    figures["most_confused_pairs"] = confused_pairs_figure(
        confused_pairs(evaluation.confusion, class_names=class_names),
        total=len(labels),
        title=f"{title}: most confused pairs (true \u2192 predicted)",
    )

    def caption(i: int) -> str:
        return f"{class_names[labels[i]]}\n\u2192 {class_names[predicted[i]]} {confidence[i]:.0%}"

    mistakes = np.flatnonzero(predicted != labels)
    mistakes = mistakes[np.argsort(-confidence[mistakes], kind="stable")][:n_images]
    if mistakes.size:
        figures["misclassified"] = image_grid(
            images[mistakes],
            titles=[caption(i) for i in mistakes],
            wrong=[True] * len(mistakes),
            title=f"{title}: most confident mistakes (true \u2192 predicted, confidence)",
        )
    sample = np.arange(min(n_images, len(labels)))
    figures["sample_predictions"] = image_grid(
        images[sample],
        titles=[caption(i) for i in sample],
        wrong=list(predicted[sample] != labels[sample]),
        title=f"{title}: sample predictions (true \u2192 predicted, confidence)",
    )
    return figures
