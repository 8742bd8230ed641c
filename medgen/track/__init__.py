"""MLflow tracking for medgen: fresh named runs, lineage, and a PHI guard in front of everything.

Lineage (code, environment, seeds, data roots) is worked out once, in :mod:`medgen.track.lineage`.

Importing this package is cheap: MLflow is imported inside the functions that talk to a store.

>>> from medgen.track import start_run                                  # doctest: +SKIP
>>> with start_run("medgen-train", "vae-tiny", tags={"medgen.task": "denoise"}) as run:
...     run.log_config(cfg); run.log_manifest(manifest_path, role="train"); run.log_lineage(seed)
...     run.log_metrics({"train/loss": 0.1}, step=1)
"""

from medgen.track.lineage import DataRoots
from medgen.track.phi import PHIError, PHIGuard, phi_findings, phi_guard
from medgen.track.run import (
    LINEAGE_PACKAGES,
    TAG_CONFIG_ARTIFACT_SHA256,
    TAG_CONFIG_SHA256,
    TAG_ENV_LOCK_SHA256,
    TAG_ERROR,
    TAG_GIT_COMMIT,
    TAG_GIT_DIFF_SHA256,
    TAG_GIT_DIRTY,
    TAG_MANIFEST,
    TAG_REDACTED_ARTIFACTS,
    TAG_REDACTIONS,
    Run,
    flatten,
    reopen_run,
    start_run,
)
from medgen.track.store import (
    STORE_RULE,
    RunNotFoundError,
    StoreNotFoundError,
    TrackingServerError,
    client_for,
    ensure_store,
    fetch_artifacts,
    open_store,
    resolve_tracking_uri,
    store_line,
    telemetry_off,
)

__all__ = [
    "DataRoots", "RunNotFoundError", "STORE_RULE", "StoreNotFoundError", "open_store",
    "reopen_run", "store_line",
    "LINEAGE_PACKAGES", "PHIError", "PHIGuard", "Run", "TAG_CONFIG_ARTIFACT_SHA256",
    "TAG_CONFIG_SHA256", "TAG_ENV_LOCK_SHA256", "TAG_ERROR", "TAG_GIT_COMMIT",
    "TAG_GIT_DIFF_SHA256", "TAG_GIT_DIRTY", "TAG_MANIFEST", "TAG_REDACTED_ARTIFACTS",
    "TAG_REDACTIONS", "TrackingServerError", "client_for", "ensure_store", "fetch_artifacts", "flatten", "phi_findings",
    "phi_guard", "resolve_tracking_uri", "start_run", "telemetry_off",
]
