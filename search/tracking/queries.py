"""The reading part of :class:`search.tracking.Tracker`: runs, their metrics, params, tags
and artifacts, found by study and role."""

from __future__ import annotations

from mlflow import MlflowClient

from search.names import ROLE_TAG, STUDY_TAG, TRIAL_TAG


class Queries:
    """Read calls of a :class:`~search.tracking.Tracker` (its ``_client``)."""

    _client: MlflowClient

    def metric_histories(self, run_id: str, keys: tuple[str, ...]) -> dict[str, list[float]]:
        """Each metric's values in step order; metrics the run never logged are left out."""
        histories = {}
        for key in keys:
            points = sorted(self._client.get_metric_history(run_id, key), key=lambda m: m.step)
            if points:
                histories[key] = [m.value for m in points]
        return histories

    def run_metrics(self, run_id: str) -> dict[str, float]:
        """The latest value of each metric of a run."""
        return dict(self._client.get_run(run_id).data.metrics)

    def artifact_paths(self, run_id: str, folder: str | None = None) -> list[str]:
        return [f.path for f in self._client.list_artifacts(run_id, folder)]

    def study_run_id(self, study_name: str) -> str | None:
        """The parent run of study ``study_name``, if it was ever started."""
        experiment = self._client.get_experiment_by_name(study_name)
        if experiment is None:
            return None
        runs = self.find_runs(experiment.experiment_id, role="study", study_name=study_name)
        return runs[0].info.run_id if runs else None

    def running_trial_runs(self, study_name: str) -> dict[str, int]:
        """The trial runs of study ``study_name`` that MLflow shows as running: run id to
        trial number."""
        experiment = self._client.get_experiment_by_name(study_name)
        if experiment is None:
            return {}
        runs = self.find_runs(
            experiment.experiment_id, role="trial", study_name=study_name, status="RUNNING"
        )
        return {r.info.run_id: int(r.data.tags[TRIAL_TAG]) for r in runs}

    def run_params(self, run_id: str) -> dict[str, str]:
        return dict(self._client.get_run(run_id).data.params)

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self._client.get_run(run_id).data.tags)

    def find_runs(
        self, experiment_id: str, *, role: str, study_name: str, status: str | None = None
    ) -> list:
        """All runs of one role (``trial``, ``promotion``, ``study``) in a study; with
        ``status`` (``RUNNING``, ...), only those."""
        query = f"tags.`{ROLE_TAG}` = '{role}' and tags.`{STUDY_TAG}` = '{study_name}'"
        if status is not None:
            query += f" and attributes.status = '{status}'"
        return self._client.search_runs([experiment_id], filter_string=query, max_results=10_000)
