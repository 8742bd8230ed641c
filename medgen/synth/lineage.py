"""What a synthesis run records for its audit: the seal recipe :mod:`medgen.synth.auditor` reads
(the synthetic manifest by data-root reference, the generator folder, the sampling settings)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def seal_synthesis(run, *, model_dir: Path | None, dst: Path, manifest_path: Path,
                   lineage: Mapping[str, Any], recipe: Mapping[str, Any]) -> str:
    """Seal a synthesis run: the synthetic manifest by data-root reference, the generator folder
    (None for an in-memory generator: nothing to re-run from) and the sampling recipe."""
    from medgen.audit import seal_run
    from medgen.track.lineage import DataRoots

    roots = DataRoots()
    manifests = {"synthetic": {"manifest": roots.ref(manifest_path, "output", guard=run.guard),
                               "data": "output", "artifact": None}}
    model = roots.ref(model_dir, "model", folder=True, guard=run.guard) if model_dir else None
    rerun = {**dict(recipe), "model": model}
    roots.add("output", dst)
    return seal_run(run, kind="synthesize", lineage=dict(lineage), rerun=rerun, roots=roots,
                    manifests=manifests)
