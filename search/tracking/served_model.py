"""The registered fmsearch model: a classifier behind one input contract (MLflow pyfunc).

The classifier is a trial's logged Keras model or scikit-learn pipeline. MLflow stores this
file with every registered model and runs it when the model is loaded ("models from code"), so
it depends only on numpy, pandas, mlflow and the model's own library, never on fmsearch.
fmsearch itself only imports it to test ``to_images``, ``to_frame`` and ``sklearn_probabilities``.

Input: images as a numpy array, a nested list or a pandas DataFrame, shaped (N, 28, 28),
(N, 28, 28, 1) or (N, 784). uint8 and integer images are pixel values 0 to 255; float images
are taken as 0 to 1 when no value exceeds 1, else as 0 to 255.

Output: a DataFrame with one row per image: ``class_index``, ``class_name``, and one
probability column per class, named after the class.

An ensemble (``members`` in the model config: the artifact names of several Keras models)
averages its members' probabilities; with ``tta`` each member also sees the images mirrored
left to right, and those probabilities are averaged in as well.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd

SIDE = 28
_SHAPES = "(N, 28, 28), (N, 28, 28, 1) or (N, 784)"


def to_images(model_input: Any) -> np.ndarray:
    """Validate images and bring them to float32 pixel values 0..255 shaped (N, 28, 28, 1).

    Raises:
        ValueError: The shape, type or value range is not one this model takes.
    """
    if isinstance(model_input, pd.DataFrame):
        array = model_input.to_numpy()
        if array.dtype == object:  # one column holding an image per row
            array = np.stack([np.asarray(v) for v in array[:, 0]])
    else:
        array = np.asarray(model_input)
    if array.dtype == bool or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise ValueError(f"expected numeric images (uint8 or float), got dtype {array.dtype}")
    shape = array.shape
    if shape[1:] in ((SIDE, SIDE), (SIDE, SIDE, 1), (SIDE * SIDE,)) and shape[0] > 0:
        images = array.reshape(-1, SIDE, SIDE, 1)
    else:
        single = shape in ((SIDE, SIDE), (SIDE * SIDE,))
        hint = "; add a batch axis for a single image" if single else ""
        raise ValueError(f"expected images shaped {_SHAPES}, got {shape}{hint}")
    images = images.astype(np.float32)
    if not np.isfinite(images).all():
        raise ValueError("expected finite pixel values, got NaN or infinity")
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 255:
        raise ValueError(f"expected pixel values in 0..255 (or 0..1), got {low:g}..{high:g}")
    if np.issubdtype(array.dtype, np.floating) and high <= 1.0:
        images *= 255.0
    return images


def to_frame(probabilities: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """One row per image: predicted class index and name, then each class's probability."""
    index = probabilities.argmax(axis=1)
    frame = pd.DataFrame({"class_index": index, "class_name": [class_names[i] for i in index]})
    for i, name in enumerate(class_names):
        frame[name] = probabilities[:, i].astype(np.float64)
    return frame


def sklearn_probabilities(model: Any, images: np.ndarray, num_classes: int) -> np.ndarray:
    """Class probabilities (N, num_classes) of a scikit-learn pipeline fitted on pixels / 255.

    Models without ``predict_proba`` (an SVC) get a softmax of their one-vs-rest decision
    values: scores that rank the classes, not calibrated probabilities.
    """
    features = images.reshape(len(images), -1) / 255.0
    if hasattr(model, "predict_proba"):
        scores = model.predict_proba(features)
    else:
        decision = model.decision_function(features)
        decision = np.exp(decision - decision.max(axis=1, keepdims=True))
        scores = decision / decision.sum(axis=1, keepdims=True)
    probabilities = np.zeros((len(images), num_classes))
    probabilities[:, np.asarray(model.classes_, dtype=int)] = scores
    return probabilities


def temperature_scaled(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``probabilities`` as if their logits were divided by ``temperature``: the served model
    cannot import fmsearch, so this repeats ``runners.calibration.temperature_scaled``."""
    logits = np.log(np.clip(probabilities, 1e-12, 1.0)) / temperature
    scaled = np.exp(logits - logits.max(axis=1, keepdims=True))
    return scaled / scaled.sum(axis=1, keepdims=True)


class FashionClassifier(mlflow.pyfunc.PythonModel):
    """Loads the trial's logged model and wraps it in the input/output contract."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        config = context.model_config
        self._class_names = list(config["class_names"])
        self._flavor = config.get("flavor", "keras")
        self._tta = bool(config.get("tta", False))
        # Fitted on validation images at promotion when it lowered their calibration error.
        self._temperature = float(config.get("temperature", 1.0))
        if self._flavor == "keras":
            import mlflow.keras

            self._members = [
                mlflow.keras.load_model(context.artifacts[name])
                for name in config.get("members", ["model"])
            ]
        else:
            import mlflow.sklearn

            self._members = [mlflow.sklearn.load_model(context.artifacts["model"])]
        self._model = self._members[0]

    @property
    def classifier(self) -> Any:
        """The wrapped Keras model or scikit-learn pipeline (an ensemble's best member), for
        explanations."""
        return self._model

    @property
    def flavor(self) -> str:
        return self._flavor

    # MLflow reads the hint of ``model_input`` as an input schema, which would reject valid
    # shapes; ``np.ndarray`` is the hint it leaves unchecked. DataFrames and lists work too.
    def predict(self, context, model_input: np.ndarray, params=None) -> pd.DataFrame:
        images = to_images(model_input)
        if self._flavor == "keras":
            views = [images, images[:, :, ::-1, :]] if self._tta else [images]
            probabilities = np.mean(
                [m.predict(v, batch_size=512, verbose=0) for m in self._members for v in views],
                axis=0,
            )
        else:
            probabilities = sklearn_probabilities(self._model, images, len(self._class_names))
        if self._temperature != 1.0:
            probabilities = temperature_scaled(probabilities, self._temperature)
        return to_frame(probabilities, self._class_names)


mlflow.models.set_model(FashionClassifier())
