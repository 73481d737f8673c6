"""The logged-models part of :class:`search.tracking.Tracker`: a trial's model in its MLflow
flavor, and the served (pyfunc) model that wraps one model or an ensemble."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search.names import EXTRA_PACKAGES_TAG, FLAVOR_TAG, MODEL_URI_TAG

if TYPE_CHECKING:
    import keras
    from mlflow.pyfunc import PyFuncModel

SERVED_MODEL_CODE = Path(__file__).parent / "served_model.py"


def _requirements(*packages: str) -> list[str]:
    # Explicit requirements: MLflow's inference imports the model's world on every log.
    return [f"{p}=={version(p)}" for p in packages]


# Each MLflow flavor fmsearch logs: its keyword for the model in ``Model.log``, its other
# options, and what a model of it needs installed to be served. cloudpickle would tie a
# scikit-learn model to this Python; pickle is what scikit-learn documents.
_FLAVORS = {
    "keras": ("model", {}, ("keras", "tensorflow")),
    "sklearn": ("sk_model", {"serialization_format": "pickle"}, ("scikit-learn",)),
}


class _DropRecords(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self._prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self._prefix)


@contextlib.contextmanager
def _served_model_quiet() -> Iterator[None]:
    # No signature, on purpose: the served model accepts several shapes and dtypes and checks
    # its input itself; MLflow would warn that it could not infer one.
    quiet = _DropRecords("Failed to infer model signature")
    logging.getLogger("mlflow.pyfunc").addFilter(quiet)
    try:
        yield
    finally:
        logging.getLogger("mlflow.pyfunc").removeFilter(quiet)


class Models:
    """Model calls of a :class:`~search.tracking.Tracker` (its ``_log``)."""

    _log: Callable[..., None]

    def log_model(
        self,
        run_id: str,
        model: Any,
        *,
        flavor: str,
        input_shape: tuple[int, ...],
        output: tuple[type, tuple[int, ...]],
        extra_packages: tuple[str, ...] = (),
    ) -> str:
        """Log a trial's ``model`` with MLflow's ``flavor`` (``keras`` or ``sklearn``) into
        ``run_id``; returns its model URI.

        Its signature: float32 ``(-1, *input_shape)`` in, ``output`` (a dtype and the shape
        after the batch) out. ``extra_packages``: distributions the model needs beyond its
        flavor's (XGBoost's), pinned in its requirements and recorded for the served model.
        """
        import importlib

        from mlflow.models import Model, ModelSignature
        from mlflow.types import Schema, TensorSpec

        model_arg, options, _ = _FLAVORS[flavor]
        dtype, shape = output
        info = Model.log(
            artifact_path=None,
            name="model",
            flavor=importlib.import_module(f"mlflow.{flavor}"),
            run_id=run_id,
            signature=ModelSignature(
                inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *input_shape))]),
                outputs=Schema([TensorSpec(np.dtype(dtype), (-1, *shape))]),
            ),
            pip_requirements=self.served_requirements(flavor, extra=extra_packages),
            **{model_arg: model, **options},
        )
        tags = {MODEL_URI_TAG: info.model_uri, FLAVOR_TAG: flavor}
        self._log(run_id, tags={**tags, EXTRA_PACKAGES_TAG: ",".join(extra_packages)})
        return info.model_uri

    def log_served_model(
        self,
        run_id: str,
        *,
        model_uri: str,
        flavor: str,
        class_names: tuple[str, ...],
        extra_packages: tuple[str, ...] = (),
        members: tuple[str, ...] = (),
        tta: bool = False,
        temperature: float = 1.0,
    ) -> str:
        """Log the pyfunc model that serves ``model_uri`` (``keras`` or ``sklearn`` flavor).

        With ``members`` (Keras model URIs, ``model_uri`` first), the served model averages
        their probabilities; with ``tta``, also over the mirrored images; with a
        ``temperature`` other than 1, it scales the result (calibration).

        Returns:
            The served model's URI.
        """
        import mlflow.pyfunc
        from mlflow.models import Model

        served = self._served_model(
            model_uri=model_uri, flavor=flavor, class_names=class_names,
            extra_packages=extra_packages, members=members, tta=tta, temperature=temperature,
        )  # fmt: skip
        with _served_model_quiet():
            info = Model.log(artifact_path=None, name="model", flavor=mlflow.pyfunc,
                             flavor_name="pyfunc.ModelFromCode", run_id=run_id,
                             **served)  # fmt: skip
        self._log(run_id, tags={MODEL_URI_TAG: info.model_uri})
        return info.model_uri

    def preview_served_model(self, **served: Any) -> PyFuncModel:
        """The served model :meth:`log_served_model` would log (same arguments but the run),
        saved to a temporary folder and loaded, recorded nowhere: what promotion predicts
        the validation images with before it decides the served model's temperature."""
        import tempfile

        import mlflow.pyfunc

        with tempfile.TemporaryDirectory() as folder, _served_model_quiet():
            path = Path(folder) / "served"
            mlflow.pyfunc.save_model(path, **self._served_model(**served))
            return mlflow.pyfunc.load_model(str(path))

    def _served_model(self, *, model_uri, flavor, class_names, extra_packages=(), members=(),
                      tta=False, temperature=1.0) -> dict[str, Any]:  # fmt: skip
        uris = members or (model_uri,)
        names = ["model", *(f"model_{i}" for i in range(1, len(uris)))]
        return {
            "python_model": str(SERVED_MODEL_CODE),
            "artifacts": dict(zip(names, uris, strict=True)),
            "model_config": {
                "class_names": list(class_names),
                "flavor": flavor,
                "members": names,
                "tta": tta,
                "temperature": temperature,
            },
            "pip_requirements": self.served_requirements(flavor, extra=extra_packages),
        }

    @staticmethod
    def served_requirements(flavor: str, *, extra: tuple[str, ...] = ()) -> list[str]:
        """What the served model of ``flavor`` needs installed, pinned to this environment."""
        return _requirements("mlflow", "numpy", "pandas", *_FLAVORS[flavor][2], *extra)

    def load_keras_model(self, model_uri: str) -> keras.Model:
        """A Keras model a trial logged (fmsearch's own: never load one from elsewhere)."""
        import mlflow.keras

        return mlflow.keras.load_model(model_uri)

    def load_served_model(self, model_uri: str) -> PyFuncModel:
        """Load a served (pyfunc) model: ``models:/NAME@ALIAS``, ``runs:/...`` or a path."""
        import mlflow.pyfunc

        return mlflow.pyfunc.load_model(model_uri)
