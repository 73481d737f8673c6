"""The model registry part of :class:`search.tracking.Tracker`: versions, aliases, and the
lock that keeps concurrent promotions of one model apart."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from runners.errors import FmsearchError
from search.names import LOCK_EXPIRES_TAG, LOCK_HOLDER_TAG, SOURCE_RUN_TAG

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

logger = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
# Longer than any promotion (judging an ensemble on the test set on a slow CPU: minutes), so
# that a live holder never loses the lock to the lease; a dead one on this host loses it at
# once (its process is gone), elsewhere when the lease runs out.
LOCK_LEASE_SECONDS = 900.0


def _holder_gone(holder: str, expires: str | None) -> bool:
    """Whether a registry lock's holder (``host:pid:token``) can no longer be holding it."""
    try:
        if time.time() > float(expires or "nan"):
            return True
    except ValueError:
        return True  # a lock without a readable lease was not written by fmsearch's code
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    return False


class Registry:
    """Registry calls of a :class:`~search.tracking.Tracker` (its ``_client``)."""

    _client: MlflowClient

    def find_version(self, name: str, *, source_run_id: str) -> ModelVersion | None:
        """The version of ``name`` registered from the trial run ``source_run_id``, if any."""
        try:
            versions = self._client.search_model_versions(
                f"name = '{name}' and tags.`{SOURCE_RUN_TAG}` = '{source_run_id}'"
            )
        except MlflowException:
            return None
        return versions[0] if versions else None

    def version_of(self, model_uri: str) -> ModelVersion:
        """The registered version ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` names.

        Raises:
            FmsearchError: Not such a URI, or no such version.
        """
        match = re.fullmatch(r"models:/([^/@]+)(?:@([^/@]+)|/(\d+))", model_uri)
        if match is None:
            raise FmsearchError(
                f"expected a registered model as models:/NAME@ALIAS or models:/NAME/VERSION, "
                f"got {model_uri!r}"
            )
        name, alias, number = match.groups()
        try:
            if alias is not None:
                return self._client.get_model_version_by_alias(name, alias)
            return self._client.get_model_version(name, number)
        except MlflowException as exc:
            raise FmsearchError(
                f"expected a registered version at {model_uri} in {self._client.tracking_uri}, "
                f"got none ({exc.error_code})"
            ) from None

    def version_by_alias(self, name: str, alias: str) -> ModelVersion | None:
        try:
            return self._client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None

    def register(
        self, *, name: str, model_uri: str, run_id: str, tags: dict[str, Any], description: str
    ) -> ModelVersion:
        """A new version of registered model ``name`` (created if needed).

        Args:
            name: The registered model.
            model_uri: A logged model, ``models:/<model_id>``.
            run_id: The run that logged it.
            tags: Version tags.
            description: Version description.
        """
        try:
            self._client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        return self._client.create_model_version(
            name,
            source=model_uri,
            run_id=run_id,
            tags={k: str(v) for k, v in tags.items()},
            description=description,
            model_id=model_uri.removeprefix("models:/"),
        )

    def champions(self, *, prefix: str = "fmsearch-") -> list[ModelVersion]:
        """The champion version of every registered model whose name starts with ``prefix``."""
        found = []
        for model in self._client.search_registered_models(max_results=1000):
            if not model.name.startswith(prefix):
                continue
            champion = self.version_by_alias(model.name, "champion")
            if champion is not None:
                found.append(champion)
        return sorted(found, key=lambda v: v.name)

    @contextlib.contextmanager
    def registry_lock(
        self,
        name: str,
        *,
        timeout: float,
        lease: float = LOCK_LEASE_SECONDS,
        poll: float = 0.5,
    ) -> Iterator[None]:
        """Hold a lock on registered model ``name`` among every process that uses this
        registry, whichever study storage each one searched in.

        The lock is a registered model, ``NAME.lock``: the registry refuses a second model of
        one name, so creating it is the acquire, deleting it the release. A holder that died
        leaves it behind; it is broken once its holder's process is gone (same host) or its
        lease has run out (any host), by renaming it to a name made from the holder's token,
        which only one of several breakers can take.

        Raises:
            FmsearchError: Still held by another process after ``timeout`` seconds.
        """
        lock = f"{name}{LOCK_SUFFIX}"
        token = uuid.uuid4().hex[:12]
        holder = f"{socket.gethostname()}:{os.getpid()}:{token}"
        deadline = time.monotonic() + timeout
        broken: list[str] = []
        while True:
            try:
                self._client.create_registered_model(
                    lock,
                    tags={LOCK_HOLDER_TAG: holder, LOCK_EXPIRES_TAG: f"{time.time() + lease:.0f}"},
                    description=f"Held by fmsearch while it promotes a version of {name}; "
                    "deleted when it is done.",
                )
                break
            except MlflowException as exc:
                # MLflow reads the existing model back after a refused create: one released
                # in between makes the refusal "not found". Both mean: held, try again.
                if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                    raise
            broken += self._break_stale_lock(lock)
            if time.monotonic() > deadline:
                raise FmsearchError(
                    f"registry lock {lock!r} still held by another process after {timeout:g} s"
                    f" ({self._lock_holder(lock)}); delete that registered model if its "
                    "holder is gone"
                )
            time.sleep(poll)
        try:
            yield
        finally:
            # What this holder broke goes first: while it stands, no breaker that read the
            # dead holder before can rename this holder's live lock to the same name.
            for name_ in broken:
                with contextlib.suppress(MlflowException):
                    self._client.delete_registered_model(name_)
            if self._lock_holder(lock) == holder:
                with contextlib.suppress(MlflowException):
                    self._client.delete_registered_model(lock)

    def _lock_holder(self, lock: str) -> str | None:
        try:
            return self._client.get_registered_model(lock).tags.get(LOCK_HOLDER_TAG)
        except MlflowException:
            return None

    def _break_stale_lock(self, lock: str) -> list[str]:
        """Rename ``lock`` aside when its holder is gone; the new name, if this call did it."""
        try:
            tags = self._client.get_registered_model(lock).tags
        except MlflowException:
            return []  # released meanwhile
        holder = tags.get(LOCK_HOLDER_TAG, "")
        if not _holder_gone(holder, tags.get(LOCK_EXPIRES_TAG)):
            return []
        aside = f"{lock}.broken-{re.sub(r'[^A-Za-z0-9]', '', holder.rpartition(':')[2])}"
        try:
            self._client.rename_registered_model(lock, aside)
        except MlflowException:
            return []  # another waiter broke it first, or it was released
        logger.warning("broke registry lock %s: its holder %s is gone", lock, holder or "?")
        return [aside]

    def set_alias(self, name: str, alias: str, version_: str) -> None:
        self._client.set_registered_model_alias(name, alias, version_)

    def set_version_tags(self, name: str, version_: str, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self._client.set_model_version_tag(name, version_, key, str(value))
