"""The MLflow model registry for deepspark models: register a logged model as a new version of a
named model, point aliases at it (MLflow 3 aliases, never the deprecated stages), list what is
registered.

A registered version loads anywhere a model URI is accepted, as ``models:/NAME@alias`` or
``models:/NAME/<version>``.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence
from typing import Any

from deepspark.config import check_alias, check_registered_name, parse_aliases
from deepspark.data._source_files import first_line
from deepspark.errors import ModelNotFoundError, UserInputError
from deepspark.tracking.run import use_tracking_uri

# The metric ``models`` shows per version, first one the source run has.
MAIN_METRICS = ("test_rmse", "test_accuracy", "val_rmse", "val_accuracy")
REGISTERED_TAG = "deepspark.registered_model"


@dataclasses.dataclass(frozen=True)
class RegisteredVersion:
    """A version of a registered model.

    Attributes:
        name: The registered model.
        version: Its version number.
        aliases: The aliases pointing at this version.
        model_uri: ``models:/NAME/<version>``; loads it anywhere.
        source: The logged model it was registered from (``models:/m-<id>``).
        run_id: The run that logged that model.
        created: When the version was registered (ISO 8601, UTC).
        metric: The source run's main metric (``test_rmse``, ``test_accuracy``...), if any.
        metric_value: Its value.
    """

    name: str
    version: int
    aliases: tuple[str, ...]
    model_uri: str
    source: str
    run_id: str | None
    created: str
    metric: str | None = None
    metric_value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        document["aliases"] = list(self.aliases)
        return document


def register_model(
    model_uri: str,
    name: str,
    *,
    aliases: Sequence[str] | str = (),
    tracking_uri: str | None = None,
) -> RegisteredVersion:
    """Register the deepspark model at ``model_uri`` as a new version of ``name``.

    Args:
        model_uri: A logged deepspark model: ``models:/m-<id>``, ``runs:/<run_id>/model``, or a
            registered version (``models:/NAME@alias``, ``models:/NAME/3``).
        name: The registered model (created when new).
        aliases: Aliases to point at the new version (moved from any older version); a
            string is split at commas.
        tracking_uri: MLflow tracking URI (default: MLflow's own default).

    Returns:
        The new ``RegisteredVersion``.

    Raises:
        UserInputError: An invalid name or alias.
        ModelNotFoundError: ``model_uri`` resolves to nothing, or not to a deepspark model.

    Example:
        >>> version = deepspark.register_model(result.model_uri, "houses", aliases=["champion"])
        >>> deepspark.load_model("models:/houses@champion")
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    check_registered_name(name, option="name")
    aliases = tuple(check_alias(alias) for alias in parse_aliases(aliases))
    use_tracking_uri(tracking_uri)
    check_deepspark_model(model_uri)
    client = mlflow.MlflowClient()
    try:
        created = mlflow.register_model(model_uri, name)
        for alias in aliases:
            client.set_registered_model_alias(name, alias, created.version)
    except MlflowException as error:
        raise UserInputError(
            f"MLflow could not register the model ({first_line(error)[:200]}). "
            f"Received: model={model_uri!r}, name={name!r}"
        ) from error
    return _describe(client, client.get_model_version(name, created.version))


def check_deepspark_model(model_uri: str) -> None:
    """Raise ``ModelNotFoundError`` unless ``model_uri`` is a model deepspark logged (reads its
    ``MLmodel`` file only, not the weights)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from deepspark.tracking.pyfunc import ARTIFACT_KEY

    try:
        info = mlflow.models.get_model_info(model_uri)
    except (MlflowException, OSError, ValueError) as error:
        raise ModelNotFoundError(
            f"Model not found ({first_line(error)[:200]}); check the URI (models:/m-<id>, "
            f"runs:/<run_id>/model, models:/NAME@alias, models:/NAME/<version>) and "
            f"--tracking-uri. Received: model={model_uri!r}"
        ) from error
    artifacts = info.flavors.get("python_function", {}).get("artifacts") or {}
    if ARTIFACT_KEY not in artifacts:
        raise ModelNotFoundError(
            f"Not a deepspark model (its pyfunc flavor has no {ARTIFACT_KEY!r} artifact); "
            f"register a model logged by deepspark. Received: model={model_uri!r}"
        )


def list_models(
    name: str | None = None, *, tracking_uri: str | None = None
) -> list[dict[str, Any]]:
    """Registered models, by name, with every version (newest first).

    Args:
        name: Only this registered model.
        tracking_uri: MLflow tracking URI (default: MLflow's own default).

    Returns:
        One dict per registered model: ``name``, ``aliases`` (alias -> version), ``created``,
        ``versions`` (``RegisteredVersion.to_dict()`` each: version, aliases, model_uri,
        source, run_id, created, the source run's main ``metric`` and ``metric_value``).

    Raises:
        UserInputError: ``name`` is invalid or not registered.
    """
    import mlflow

    use_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    if name is not None:
        check_registered_name(name, option="name")
        found = [_registered_model(client, name)]
    else:
        found = sorted(_all_registered_models(client), key=lambda model: model.name)
    listing = []
    for model in found:
        aliases = {alias: int(version) for alias, version in model.aliases.items()}
        # Searched versions come without their aliases: the registered model has them.
        by_version: dict[int, list[str]] = {}
        for alias, number in aliases.items():
            by_version.setdefault(number, []).append(alias)
        versions = client.search_model_versions(f"name = '{model.name}'")
        versions = sorted(versions, key=lambda version: int(version.version), reverse=True)
        described = [
            _describe(client, version, aliases=by_version.get(int(version.version), []))
            for version in versions
        ]
        listing.append(
            {
                "name": model.name,
                "aliases": aliases,
                "created": _iso(model.creation_timestamp),
                "versions": [version.to_dict() for version in described],
            }
        )
    return listing


def _registered_model(client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as error:
        known = sorted(model.name for model in _all_registered_models(client))
        raise UserInputError(
            f"No registered model of that name; registered: {', '.join(known) or 'none'}. "
            f"Received: name={name!r}"
        ) from error


def _all_registered_models(client) -> list:
    found, token = [], None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def _describe(client, version, *, aliases: Sequence[str] | None = None) -> RegisteredVersion:
    metric, value = _main_metric(client, version.run_id)
    return RegisteredVersion(
        name=version.name,
        version=int(version.version),
        aliases=tuple(sorted(version.aliases or () if aliases is None else aliases)),
        model_uri=f"models:/{version.name}/{version.version}",
        source=version.source,
        run_id=version.run_id,
        created=_iso(version.creation_timestamp),
        metric=metric,
        metric_value=value,
    )


def _main_metric(client, run_id: str | None) -> tuple[str | None, float | None]:
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None, None
    try:
        metrics = client.get_run(run_id).data.metrics
    except MlflowException:  # the run was deleted; the version stays
        return None, None
    for name in MAIN_METRICS:
        if name in metrics:
            return name, float(metrics[name])
    return None, None


def _iso(milliseconds: int | None) -> str:
    if milliseconds is None:
        return ""
    stamp = datetime.datetime.fromtimestamp(milliseconds / 1000, datetime.UTC)
    return stamp.isoformat(timespec="seconds")
