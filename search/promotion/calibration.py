"""Calibration of a promoted model: temperature scaling fitted on the study's validation
images, kept only where it lowers their expected calibration error, and its record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from runners.data import CLASS_NAMES
from search.names import (
    TEST_LOSS_TAG,
)
from search.tracking import Tracker

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel


@dataclass(frozen=True)
class Calibration:
    """Temperature scaling fitted on validation images: the temperature, and the expected
    calibration error there without and with it (None: not fitted)."""

    temperature: float
    val_ece_before: float | None = None
    val_ece_after: float | None = None

    @property
    def applied(self) -> bool:
        """Whether the served model scales by the temperature: only where it calibrated the
        validation images better."""
        return self.val_ece_after is not None and self.val_ece_after < self.val_ece_before


def calibrate(served: PyFuncModel, images: np.ndarray, labels: np.ndarray) -> Calibration:
    from runners.calibration import expected_calibration_error, fit_temperature, temperature_scaled

    probabilities = served.predict(images)[list(CLASS_NAMES)].to_numpy()
    temperature = fit_temperature(probabilities, labels)
    scaled = temperature_scaled(probabilities, temperature)
    return Calibration(
        temperature=temperature,
        val_ece_before=expected_calibration_error(probabilities, labels),
        val_ece_after=expected_calibration_error(scaled, labels),
    )


def record_calibration(
    tracker: Tracker,
    run_id: str,
    calibration: Calibration,
    *,
    probabilities: np.ndarray,
    labels: np.ndarray,
    title: str,
) -> dict[str, str]:
    """The served model's calibration on the test set (with and without the temperature)
    as metrics and a reliability diagram of the promotion run; returns the version tags."""
    from runners.calibration import (
        expected_calibration_error,
        log_loss,
        reliability,
        temperature_scaled,
    )
    from runners.figures import reliability_diagram

    # The served probabilities carry the temperature, if applied; 1/T takes it back out.
    unscaled = (temperature_scaled(probabilities, 1 / calibration.temperature)
                if calibration.applied else probabilities)  # fmt: skip
    metrics = {
        "test_ece": expected_calibration_error(probabilities, labels),
        "test_ece_uncalibrated": expected_calibration_error(unscaled, labels),
        "test_loss": log_loss(probabilities, labels),
        "temperature": calibration.temperature if calibration.applied else 1.0,
    }
    if calibration.val_ece_before is not None:
        metrics |= {"val_ece_before": calibration.val_ece_before,
                    "val_ece_after": calibration.val_ece_after}  # fmt: skip
    tracker.log_metrics(run_id, metrics)
    curves = {"as trained": reliability(unscaled, labels)}
    if calibration.applied:
        curves[f"temperature {calibration.temperature:.2f}"] = reliability(probabilities, labels)
    tracker.log_figures(run_id, {"test_reliability": reliability_diagram(curves, title=title)})
    decision = (
        f"temperature {calibration.temperature:.3f}: validation ECE "
        f"{calibration.val_ece_before:.4f} -> {calibration.val_ece_after:.4f}"
        if calibration.applied
        else "none: no validation images" if calibration.val_ece_before is None
        else f"none: temperature {calibration.temperature:.3f} did not lower validation ECE "
        f"({calibration.val_ece_before:.4f} -> {calibration.val_ece_after:.4f})"
    )  # fmt: skip
    return {
        "test_ece": f"{metrics['test_ece']:.6f}",
        TEST_LOSS_TAG: f"{metrics['test_loss']:.6f}",
        "calibration": decision,
    }
