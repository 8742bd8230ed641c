"""Run a pipeline: one MLflow parent run, one nested run per step, resumable step by step.

Steps that have a command (deid, manifest, train, denoise, upscale, translate, synthesize,
evaluate synth) run as ``python -m medgen ...`` subprocesses - exactly what a user would type, in
their own process (a crash or an out-of-memory kill cannot take the pipeline down) - with
``MEDGEN_PARENT_RUN_ID`` set so their runs nest under the pipeline's. Small steps (sample data,
degraded copies, paired evaluation, audits) run in-process with their own nested run.

A finished step writes ``WORKDIR/.pipeline/NAME.json`` (the sha256 of its resolved spec, its
outputs, its run id); a re-run skips steps whose spec is unchanged and whose outputs exist.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgen.errors import EXIT_OK, EXIT_PARTIAL, ConfigError
from medgen.pipeline.spec import PipelineSpec, configs_dir, interpolate, resolve_config
from medgen.pipeline.steps import StepFailed
from medgen.utils.atomic import atomic_write_text
from medgen.utils.hashing import sha256_json

log = logging.getLogger("medgen.pipeline")


@dataclass
class StepResult:
    name: str
    kind: str
    status: str  # ok | partial | failed | skipped | planned
    outputs: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    seconds: float = 0.0
    message: str = ""


@dataclass
class PipelineResult:
    name: str
    workdir: Path
    steps: list[StepResult]
    run_id: str | None = None
    tracking_uri: str | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_OK if all(s.status in ("ok", "skipped", "planned") for s in self.steps) else EXIT_PARTIAL


class Runner:
    def __init__(self, spec: PipelineSpec, *, dry_run: bool = False, say: Callable[[str], None] = log.info,
                 force: tuple[str, ...] = ()):
        self.spec = spec
        self.dry_run = dry_run
        self.say = say
        self.force = set(force)
        scope: dict[str, Any] = {"name": spec.name, "configs": str(configs_dir()), "python": sys.executable}
        scope["workdir"] = interpolate(spec.workdir, scope)
        self.workdir = Path(scope["workdir"])
        scope["key_file"] = interpolate(spec.key_file, scope)
        scope["steps"] = {}
        self.scope = scope
        self.state_dir = self.workdir / ".pipeline"
        self.env: dict[str, str] = {}
        self.tracking_uri: str | None = None
        self.warnings: list[str] = []  # repeated at the end of the run (also with -q)

    # --- subprocess steps ----------------------------------------------------------------------
    def cli(self, args: list[str], *, ok_codes=(0,), partial_codes=(3,), timeout: float | None = None) -> tuple[str, str]:
        cmd = [sys.executable, "-m", "medgen", *args]
        log.info("step command: medgen %s", " ".join(args))
        r = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=timeout)
        self.warnings += [f"{args[0]}: {ln[len('warning: '):]}" for ln in r.stderr.splitlines()
                          if ln.startswith("warning: ")]  # the command's end-of-run summary
        if r.returncode in ok_codes:
            return "ok", r.stdout
        if r.returncode in partial_codes:
            return "partial", r.stdout
        tail = (r.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
        raise StepFailed(f"exit {r.returncode}: {tail}")

    # --- the run -------------------------------------------------------------------------------
    def run(self) -> PipelineResult:
        plan = self.plan()  # every step checked before any runs: a bad value costs seconds
        if self.dry_run:
            return PipelineResult(self.spec.name, self.workdir, plan)
        from medgen.track import ensure_store, start_run
        from medgen.track.run import ENV_PARENT_RUN_ID

        self.workdir.mkdir(parents=True, exist_ok=True)
        key_env = self._key_env()
        self.tracking_uri = ensure_store(self.spec.tracking.tracking_uri)
        with start_run(self.spec.tracking.experiment, self.spec.name, tracking_uri=self.tracking_uri,
                       tags={"medgen.task": "pipeline", "medgen.pipeline": self.spec.name},
                       roots={"workdir": str(self.workdir.resolve())}) as parent:
            parent.log_config(self.spec, "pipeline/resolved.yaml")
            parent.log_lineage()
            self.parent = parent
            self.env = {k: v for k, v in os.environ.items() if k not in ("MEDGEN_KEY", "MEDGEN_KEY_FILE")}
            self.env.update({"MLFLOW_TRACKING_URI": self.tracking_uri, ENV_PARENT_RUN_ID: parent.run_id,
                             "MLFLOW_DISABLE_TELEMETRY": "true", **key_env})
            results = self._run_steps(parent)
            from medgen.pipeline.auditor import seal_pipeline

            seal_pipeline(self, parent, results)
            return PipelineResult(self.spec.name, self.workdir, results, parent.run_id,
                                  self.tracking_uri)

    def _key_env(self) -> dict[str, str]:
        """The pseudonymization key the steps use: the spec's ``key_file`` when set, else an
        exported ``$MEDGEN_KEY_FILE`` / ``$MEDGEN_KEY``, else ``WORKDIR/secrets/medgen.key``
        (created on first use). Only the fingerprint is ever printed."""
        from medgen.keys import create_key_file, load_key

        explicit = "key_file" in self.spec.model_fields_set
        if not explicit and os.environ.get("MEDGEN_KEY_FILE"):
            key_file = Path(os.environ["MEDGEN_KEY_FILE"])
            self.say(f"key: $MEDGEN_KEY_FILE (fingerprint {load_key(key_file).fingerprint})")
            return {"MEDGEN_KEY_FILE": str(key_file.resolve())}
        if not explicit and os.environ.get("MEDGEN_KEY"):
            self.say(f"key: $MEDGEN_KEY (fingerprint {load_key(None).fingerprint})")
            return {"MEDGEN_KEY": os.environ["MEDGEN_KEY"]}
        key_file = Path(self.scope["key_file"])
        if not key_file.exists():
            create_key_file(key_file)
            self.say(f"created a pseudonymization key at {key_file} (keep it secret)")
        return {"MEDGEN_KEY_FILE": str(key_file.resolve())}

    def _run_steps(self, parent) -> list[StepResult]:
        results: list[StepResult] = []
        stop = False
        for step in self.spec.steps:
            if stop:
                results.append(StepResult(step.name, step.kind, "failed",
                                          message="not run: an earlier step failed"))
                continue
            res = self._run_step(step)
            results.append(res)
            self.say(f"{res.status:8} {step.name} ({step.kind}) {res.seconds:.1f} s {res.message}")
            parent.log_metrics({f"step.{step.name}.seconds": res.seconds})
            parent.set_tags({f"medgen.step.{step.name}.status": res.status,
                             f"medgen.step.{step.name}.run_id": res.run_id or ""})
            stop = res.status == "failed"
        return results

    def plan(self) -> list[StepResult]:
        """Resolve and check every step (:mod:`medgen.pipeline.check`) without running any; say
        each step's status and time estimate. Raises ConfigError on the first bad value."""
        from medgen.pipeline.check import check_force, check_step
        from medgen.pipeline.estimate import fmt_seconds

        check_force(self.spec.step_names(), self.force)
        out: list[StepResult] = []
        lines: list[str] = []  # said once every step passed: an error stays the only line
        for i, step in enumerate(self.spec.steps):
            resolved = self._resolve(step)
            done = self._done(step.name, resolved)
            chk = check_step(i, step, resolved)
            last = self._last_seconds(step.name)
            est, basis = (0.0, "done") if done else (
                (last, "its last run") if last is not None else (chk.estimate_s, chk.basis))
            st = "skipped" if done else "planned"
            self.warnings += [f"{step.name}: {w}" for w in chk.warnings]
            lines.append(f"{st:8} {step.name} ({step.kind}) {fmt_seconds(est)} [{basis}]: "
                         f"{json.dumps(resolved)}")
            self.scope["steps"][step.name] = done["outputs"] if done else _placeholders(step.name)
            out.append(StepResult(step.name, step.kind, st, seconds=est or 0.0, message=basis))
        if self.dry_run:
            total = sum(r.seconds for r in out)
            for line in lines + [f"estimate: {fmt_seconds(total)} in all (rough, CPU; how: "
                                 "medgen/pipeline/estimate.py)"]:
                self.say(line)
        self.scope["steps"] = {}
        return out

    def _last_seconds(self, name: str) -> float | None:
        p = self.state_dir / f"{name}.json"
        try:
            return float(json.loads(p.read_text())["seconds"]) if p.exists() else None
        except (KeyError, TypeError, ValueError):
            return None

    def _resolve(self, step, planned: bool = False) -> dict:
        data = step.model_dump(mode="json")
        return interpolate(data, self.scope)

    def _done(self, name: str, resolved: dict) -> dict | None:
        p = self.state_dir / f"{name}.json"
        if name in self.force or not p.exists():
            return None
        st = json.loads(p.read_text())
        if st.get("spec_sha256") != sha256_json(resolved) or st.get("status") not in ("ok", "partial"):
            return None
        for v in st.get("outputs", {}).values():
            if isinstance(v, str) and v.startswith(("/", ".")) and not Path(v).exists():
                return None
        return st

    def _run_step(self, step) -> StepResult:
        from medgen.pipeline import steps as impl

        resolved = self._resolve(step)
        done = self._done(step.name, resolved)
        if done:
            self.scope["steps"][step.name] = done["outputs"]
            return StepResult(step.name, step.kind, "skipped", done["outputs"], done.get("run_id"),
                              message="(done earlier; spec unchanged)")
        t0 = time.perf_counter()
        fn = getattr(impl, "step_" + step.kind.replace("-", "_"))
        try:
            status, outputs, run_id = fn(self, step.name, resolved)
            msg = ""
        except (StepFailed, ConfigError) as exc:
            status, outputs, run_id, msg = "failed", getattr(exc, "outputs", {}), None, str(exc)
        res = StepResult(step.name, step.kind, status, outputs, run_id, time.perf_counter() - t0, msg)
        self.scope["steps"][step.name] = outputs
        if status in ("ok", "partial"):
            atomic_write_text(self.state_dir / f"{step.name}.json", json.dumps(
                {"spec_sha256": sha256_json(resolved), "status": status, "outputs": _jsonable(outputs),
                 "run_id": run_id, "seconds": round(res.seconds, 1)}, indent=1, sort_keys=True))
        return res

    def config_path(self, name: str) -> Path:
        return resolve_config(name)


def _placeholders(name: str) -> dict:
    class _P(dict):
        def __missing__(self, key):
            return f"<{name}.{key}>"

        def __contains__(self, key):
            return True

    return _P()


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))
