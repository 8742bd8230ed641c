"""A training run's record across interruptions: every attempt carries the full lineage, a killed
attempt is closed and sealed by the attempt that resumes it, and the chain is provable.

A training folder (``OUTPUT/RUN``) can be written by several *attempts*: the first ``medgen
train``, then each ``medgen train --resume`` after a crash, a ``kill -9`` or an early stop. Each
attempt is its own MLflow run. What makes them one provable record:

* **every attempt logs everything** (params, resolved config, data digests, code, environment),
  not only the first;
* the checkpoint's resume state lists the attempts that wrote it (``attempts``) and the config
  it was trained with;
* before each ``last`` checkpoint is written, the attempt tags ``medgen.checkpoint.last`` with
  the step and weights digest of the checkpoint being written and of the one before it (a kill
  between the tag and the write leaves the earlier one on disk: either is accepted);
* on ``--resume`` the new attempt checks that the checkpoint it loads is one its predecessor
  recorded (a foreign checkpoint is refused), marks a predecessor left ``RUNNING`` by a kill as
  ``KILLED`` with a pointer to its successor (``medgen.resume.successor``), and seals it (kind
  ``train-attempt``) if it was never sealed;
* the final seal lists every earlier attempt with its seal digest; ``medgen audit`` re-audits
  each of them (:mod:`medgen.train.auditor`) and fails if any record changed.

``--resume --set optim.max_steps=N`` extends a run (recorded as ``medgen.resume.extended`` and in
the seal); any other config change on resume is refused with a one-line reason naming the key.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medgen.errors import ConfigError

log = logging.getLogger("medgen.train")

TAG_CHECKPOINT = "medgen.checkpoint.last"
TAG_PREVIOUS = "medgen.resume.previous_run_id"
TAG_CHAIN = "medgen.resume.attempts"
TAG_AT_STEP = "medgen.resume.at_step"
TAG_EXTENDED = "medgen.resume.extended"
TAG_SUCCESSOR = "medgen.resume.successor"
#: the only config keys a resume may change
EXTENSIBLE = ("optim.max_steps",)
LOCK_NAME = ".medgen-train.lock"
#: ``RUN/attempts.json``: every attempt that wrote (or began to write) this run folder
ATTEMPTS_FILE = "attempts.json"


@contextlib.contextmanager
def run_folder_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``RUN/.medgen-train.lock`` while training writes there: a second process resuming the
    same folder is refused (the lock dies with its process, ``kill -9`` included)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_NAME, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(run_dir.name, "another training process is writing this run "
                              "folder (wait for it, or kill it before --resume)") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def config_changes(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """``key -> (old, new)`` for every flattened config value that differs."""
    from medgen.track import flatten

    a, b = flatten(old), flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def check_resume_config(old: dict, new: dict, step: int, where: str) -> dict[str, list]:
    """The changes a resume makes (``key -> [old, new]``); ConfigError for a forbidden one."""
    changes = config_changes(old, new)
    for key, (_, b) in changes.items():
        if key not in EXTENSIBLE:
            raise ConfigError(where, f"cannot resume: '{key}' differs from the checkpoint's config "
                              f"(only {', '.join(EXTENSIBLE)} may change on resume)")
        if key == "optim.max_steps" and int(b) < step:
            raise ConfigError(where, f"cannot resume: optim.max_steps={b} is below the "
                              f"checkpoint's step {step}")
    return {k: [a, b] for k, (a, b) in changes.items()}


def default_run_name(cfg) -> str:
    """``<model>-<8 hex>``: the digest of the config *without* the keys a resume may change, so
    ``--resume --set optim.max_steps=N`` finds the run folder it extends."""
    from medgen.utils.hashing import sha256_json

    data = cfg.model_dump(mode="json")
    for key in EXTENSIBLE:
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    return f"{cfg.model.name}-{sha256_json(data)[:8]}"


def _checkpoint_extra(last: Path) -> dict | None:
    """The JSON part of a checkpoint's resume state (no tensors loaded), or None."""
    try:
        return json.loads((last / "train_state.json").read_text())["state"]["extra"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def refuse_nearby_interrupted(cfg, run_dir: Path, near: int = 3) -> None:
    """``--resume`` found no checkpoint for this config. If an *interrupted* run of the same
    model in the same output folder differs from it in a few settings, the person most likely
    changed a setting on resume: refuse, naming the keys. A run that is finished, or differs in
    more than ``near`` settings, is another experiment: training starts fresh."""
    mine = cfg.model_dump(mode="json")
    best = None
    for last in sorted(run_dir.parent.glob(f"{cfg.model.name}-*/checkpoints/last")):
        extra = _checkpoint_extra(last)
        if not extra or not extra.get("config"):
            continue
        old = extra["config"]
        if int(extra.get("step", 0)) >= int(old.get("optim", {}).get("max_steps", 0)):
            continue  # finished: nothing to resume there
        keys = [k for k in config_changes(old, mine) if k not in EXTENSIBLE]
        if keys and len(keys) <= near and (best is None or len(keys) < len(best[1])):
            best = (last.parents[1].name, keys)
    if best is not None:
        name, keys = best
        raise ConfigError(run_dir.name, f"cannot resume: the interrupted run {name} differs in "
                          f"'{keys[0]}'" + (f" (and {len(keys) - 1} more)" if len(keys) > 1 else "")
                          + f" (only {', '.join(EXTENSIBLE)} may change on resume; to start a "
                          f"separate run, drop --resume or give --run-name)")


class Provenance:
    """The trainer's record keeping across attempts (rank 0 only)."""

    def __init__(self, trainer):
        self.t = trainer
        self.earlier: list[dict] = []  # [{"run_id", "start_step"}] from the checkpoint
        self.resumed_from: dict | None = None  # {"step", "weights_sha256"} of the loaded checkpoint
        self.extended: dict[str, list] = {}
        self.linked: list[dict] = []  # earlier attempts as found in the store at start
        self.start_step = 0
        self._last_ckpt: dict | None = None
        self.run = None

    # --- resume ------------------------------------------------------------------------------
    def on_load(self, extra: dict, card_run_id: str | None) -> None:
        """Check and remember what a loaded checkpoint says (called before training resumes)."""
        from medgen.models import state_dict_sha256

        t = self.t
        step = int(extra["step"])
        if extra.get("config") is not None:  # the trainer refused a forbidden change already
            self.extended = check_resume_config(extra["config"], t.cfg.model_dump(mode="json"),
                                                step, t.run_name)
        self.earlier = list(extra.get("attempts") or
                            ([{"run_id": card_run_id, "start_step": 0}] if card_run_id else []))
        wsha = state_dict_sha256({k: v.detach().cpu() for k, v in t.model.state_dict().items()})
        self.resumed_from = {"step": step, "weights_sha256": wsha}
        self._last_ckpt = dict(self.resumed_from)
        self.start_step = step

    def extra_state(self) -> dict[str, Any]:
        """What every checkpoint carries for the next resume."""
        me = [{"run_id": self.run.run_id, "start_step": self.start_step}] if self.run else []
        return {"attempts": self.earlier + me, "config": self.t.cfg.model_dump(mode="json")}

    def before_save_last(self, step: int) -> None:
        """Tag the checkpoint about to be written (and the previous one) on this attempt."""
        if self.run is None:
            return
        from medgen.models import state_dict_sha256

        wsha = state_dict_sha256({k: v.detach().cpu() for k, v in self.t.model.state_dict().items()})
        cur = {"step": step, "weights_sha256": wsha, "prev": self._last_ckpt}
        self.run.set_tags({TAG_CHECKPOINT: json.dumps(cur, sort_keys=True, separators=(",", ":"))})
        self._last_ckpt = {"step": step, "weights_sha256": wsha}

    # --- the attempt's run -------------------------------------------------------------------
    def start(self, run) -> None:
        """Log the full lineage of this attempt and link it to the earlier ones."""
        t, cfg = self.t, self.t.cfg
        self.run = run
        run.log_config(cfg)
        run.log_manifest(t.manifest.digest, role="train")
        for role, (m, _, _) in t.task.input_manifests().items():
            run.log_manifest(m.digest, role=role)
        run.log_lineage({"seed": cfg.seed})
        listed = self._read_attempts()
        abandoned: list[dict] = []
        if self.resumed_from is None:  # from step 0: attempts listed here produced nothing kept
            abandoned, self.earlier = listed, []
        else:  # attempts after the checkpoint's writer that died before their first checkpoint
            known = {a["run_id"] for a in self.earlier}
            self.earlier += [a for a in listed if a["run_id"] not in known]
        tags = {"medgen.task": str(cfg.task.name), **cfg.task.tags(), "medgen.model": cfg.model.name,
                "medgen.resumed": str(bool(self.earlier)).lower()}
        if self.earlier:
            tags.update({TAG_PREVIOUS: self.earlier[-1]["run_id"], TAG_AT_STEP: self.start_step,
                         TAG_CHAIN: ",".join(a["run_id"] for a in self.earlier),
                         # the checkpoint on disk now: a successor resuming it can tie it to us
                         TAG_CHECKPOINT: json.dumps({**self.resumed_from, "prev": None},
                                                    sort_keys=True, separators=(",", ":"))})
        if self.extended:
            tags[TAG_EXTENDED] = json.dumps(self.extended, sort_keys=True)
        run.set_tags(tags)
        self._write_attempts(self.earlier + [{"run_id": run.run_id, "start_step": self.start_step}])
        for att in abandoned:
            self._close_abandoned(run, att["run_id"])
        if self.earlier:
            self._link_earlier(run)

    def _attempts_file(self) -> Path:
        return self.t.run_dir / ATTEMPTS_FILE

    def _read_attempts(self) -> list[dict]:
        try:
            return [a for a in json.loads(self._attempts_file().read_text()) if a.get("run_id")]
        except (OSError, ValueError, AttributeError):
            return []

    def _write_attempts(self, attempts: list[dict]) -> None:
        from medgen.utils.atomic import atomic_write_text

        atomic_write_text(self._attempts_file(), json.dumps(attempts, indent=1) + "\n")

    def _link_earlier(self, run) -> None:
        from medgen.track.store import retry

        client = run.client
        ids = [a["run_id"] for a in self.earlier] + [run.run_id]
        for i, att in enumerate(self.earlier):
            try:
                prev = retry(lambda a=att: client.get_run(a["run_id"]))
            except Exception:  # noqa: BLE001 - MLflow: not found / another store
                log.warning("earlier attempt %s is not in this store; the audit will fail",
                            att["run_id"])
                self.linked.append({**att, "audit_sha256": None, "status": "missing"})
                continue
            last = i == len(self.earlier) - 1
            if last:
                self._check_checkpoint(prev)
            if last or not prev.data.tags.get("medgen.audit.sha256"):
                self._close(run, prev, ids[i + 1])
                prev = client.get_run(att["run_id"])
            self.linked.append({**att, "status": prev.info.status,
                                "audit_sha256": prev.data.tags.get("medgen.audit.sha256")})

    def _check_checkpoint(self, prev) -> None:
        raw = prev.data.tags.get(TAG_CHECKPOINT)
        if raw is None:
            log.warning("earlier attempt %s recorded no checkpoint digest (made by an older "
                        "medgen); the resumed checkpoint cannot be tied to it", prev.info.run_id)
            return
        rec = json.loads(raw)
        known = [{"step": rec["step"], "weights_sha256": rec["weights_sha256"]}, rec.get("prev")]
        if self.resumed_from not in known:
            raise ConfigError(self.t.run_name, f"cannot resume: the checkpoint at step "
                              f"{self.resumed_from['step']} is not one run {prev.info.run_id} "
                              f"wrote (its weights digest differs)")

    def _close(self, run, prev, successor: str) -> None:
        """Point an earlier attempt at its successor; mark it KILLED and seal it if a kill left it
        open (a run sealed already keeps its seal: the pointer tag is not sealed)."""
        from medgen.audit import seal_run
        from medgen.track.run import reopen_run

        rid = prev.info.run_id
        handle = reopen_run(rid, tracking_uri=run.tracking_uri, guard=run.guard)
        handle.set_tags({TAG_SUCCESSOR: successor})
        if prev.data.tags.get("medgen.audit.sha256"):
            handle.detach()
            return
        status = "KILLED" if prev.info.status == "RUNNING" else prev.info.status
        ckpt = json.loads(prev.data.tags.get(TAG_CHECKPOINT) or "null")
        seal_run(handle, kind="train-attempt",
                 lineage={"status": status, "successor": successor, "checkpoint": ckpt,
                          "config_sha256": prev.data.tags.get("medgen.config_sha256")})
        if prev.info.status == "RUNNING":
            handle.end("KILLED")
        else:
            handle.detach()
        log.info("earlier attempt %s marked %s and sealed; resumed by %s", rid, status, successor)

    def _close_abandoned(self, run, rid: str) -> None:
        """An attempt of this folder that died before its first checkpoint, when training
        restarts from step 0: marked KILLED and sealed, pointing at the run that restarted."""
        from medgen.audit import seal_run
        from medgen.track.run import reopen_run

        try:
            prev = run.client.get_run(rid)
        except Exception:  # noqa: BLE001 - MLflow: not found / another store
            return
        if prev.info.status != "RUNNING" or prev.data.tags.get("medgen.audit.sha256"):
            return
        handle = reopen_run(rid, tracking_uri=run.tracking_uri, guard=run.guard)
        seal_run(handle, kind="train-attempt",
                 lineage={"status": "KILLED", "superseded_by": run.run_id, "checkpoint": None})
        handle.end("KILLED")
        log.info("attempt %s died before its first checkpoint; marked KILLED", rid)

    def seal(self, run, weights_sha: str, stopped: bool) -> None:
        """Log the input manifests (when they hold no identifiers) and seal this attempt."""
        from medgen.audit import seal_run
        from medgen.track import PHIError
        from medgen.track.lineage import DataRoots

        t = self.t
        roots = DataRoots()
        inputs = {}
        sources = {"train": (t.manifest, "data.manifest", "data.root"), **t.task.input_manifests()}
        for role, (m, mkey, rkey) in sources.items():
            artifact = None
            try:
                run.log_artifact(m.path, f"manifests/{role}")
                artifact = f"manifests/{role}/{Path(m.path).name}"
            except PHIError:
                log.warning("input manifest '%s' not logged to MLflow (it holds identifier-like "
                            "text); an audit needs --manifest %s=PATH", role, role)
            prefix = "" if role == "train" else f"{role}_"
            data = roots.add(f"{prefix}data", m.root) if m.root is not None else None
            inputs[role] = {"manifest": roots.ref(m.path, f"{prefix}manifest", guard=run.guard),
                            "data": data, "artifact": artifact,
                            "config": {"manifest": mkey, "root": rkey}}
        lineage = {"weights_sha256": weights_sha, "config_sha256": t.config_sha256,
                   "train_manifest_sha256": t.manifest.digest, "steps": t.step,
                   "stopped_early": stopped, "start_step": self.start_step,
                   "attempts": self.linked, "resumed_from": self.resumed_from,
                   "extended": self.extended}
        seal_run(run, kind="train", lineage=lineage, roots=roots, manifests=inputs,
                 rerun={"smoke": t.smoke})
