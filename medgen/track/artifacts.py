"""What a run writes as files: text, JSON, the caller's files, the resolved config, manifest
digests, lineage and figure grids - each passing the run's PHI guard first.

:class:`ArtifactLogging` is a mixin of :class:`medgen.track.run.Run` (it uses the run's client,
run id, guard, ``_g`` and ``_note_redactions``); it exists to keep ``run.py`` readable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medgen.track.lineage import LINEAGE_PACKAGES
from medgen.track.phi import PHIError
from medgen.track.store import ARTIFACTS_DIR_NAME, retry
from medgen.utils.hashing import sha256_bytes, sha256_file

TAG_CONFIG_SHA256 = "medgen.config_sha256"
TAG_CONFIG_ARTIFACT_SHA256 = "medgen.config.artifact_sha256"
TAG_MANIFEST = "medgen.manifest.{role}.sha256"

_ROLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> ``{"a.b.c": leaf}``; lists/tuples become compact JSON strings."""
    out: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        if not obj and prefix:
            out[prefix] = "{}"
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        out[prefix] = json.dumps(obj, separators=(",", ":"), sort_keys=True, default=str)
    else:
        out[prefix] = obj
    return out


def _is_text(path: Path, limit: int = 256 << 20) -> bool:
    """True for files that look like UTF-8 text (scanned before upload); binary is not scanned."""
    if path.stat().st_size > limit:
        return False
    with open(path, "rb") as fh:
        head = fh.read(8192)
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte char cut at 8192 is still text
        return exc.start >= len(head) - 4
    return True


def _check_on_phi(on_phi: str) -> None:
    if on_phi not in ("redact", "raise"):
        raise ValueError(f"on_phi must be 'redact' or 'raise', got {on_phi!r}")


def _to_plain(cfg: Any) -> Any:
    if hasattr(cfg, "model_dump"):
        return cfg.model_dump(mode="json")
    if isinstance(cfg, Mapping):
        return json.loads(json.dumps(cfg, default=str))
    raise TypeError("log_config expects a pydantic model or a mapping")



class ArtifactLogging:
    """Artifact, config, manifest, lineage and figure logging of a :class:`~medgen.track.Run`."""

    def _upload(self, local: Path, artifact_dir: str | None) -> None:
        retry(lambda: self.client.log_artifact(self.run_id, str(local), artifact_dir or None))

    def _artifact_dir(self, artifact_path: str | None) -> str | None:
        if not artifact_path:
            return None
        ap = self._g(artifact_path.strip("/"), "artifact path")
        if ap.startswith("PATH-") or ".." in Path(ap).parts:
            raise ValueError("artifact_path must be a relative folder inside the run")
        return ap

    def _write_and_upload(self, data: bytes, artifact_file: str) -> str:
        artifact_file = self._g(artifact_file.strip("/"), "artifact name")
        if artifact_file.startswith("PATH-") or ".." in Path(artifact_file).parts:
            raise ValueError("artifact_file must be a relative path inside the run")
        d = Path(tempfile.mkdtemp(dir=self._tmp))
        local = d / Path(artifact_file).name
        local.write_bytes(data)
        parent = str(Path(artifact_file).parent)
        self._upload(local, None if parent == "." else parent)
        shutil.rmtree(d, ignore_errors=True)
        return artifact_file

    def log_text(self, text: str, artifact_file: str, *, on_phi: str = "redact",
                 _dates: bool = True) -> str:
        """Log ``text`` as ``artifact_file``; returns the sha256 of the bytes logged.

        ``on_phi="redact"`` replaces identifying spans; ``"raise"`` refuses with a PHIError.
        """
        _check_on_phi(on_phi)
        if on_phi == "raise":
            self.guard.check(text, where=self._g(artifact_file, "artifact name"))
            safe = text
        else:
            safe = self._g(text, "text artifact", dates=_dates)
        data = safe.encode("utf-8")
        name = self._write_and_upload(data, artifact_file)
        self._note_redactions(name if safe != text else None)
        return sha256_bytes(data)

    def log_json(self, obj: Any, artifact_file: str, *, on_phi: str = "redact",
                 sha256_tag: str | None = None, canonical: bool = False) -> str:
        """Log ``obj`` as JSON (sorted keys; ``canonical=True``: medgen's canonical bytes).

        Strings and keys are guarded (numbers only against registered identifiers). Returns the
        sha256 of the bytes logged and, when ``sha256_tag`` is given, stores it in that tag (how an
        ``audit.json`` is sealed: log with ``on_phi="raise"`` so the sealed bytes are exactly the
        ones built).
        """
        from medgen.utils.hashing import canonical_json

        _check_on_phi(on_phi)
        if on_phi == "raise":
            strict = self.guard.strict_copy()
            safe = strict.guard_obj(obj, where=self._g(artifact_file, "artifact name"))
        else:
            safe = self.guard.guard_obj(obj, where="json artifact")
        if canonical:
            data = canonical_json(safe)
        else:
            data = (json.dumps(safe, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
                    + "\n").encode("utf-8")
        name = self._write_and_upload(data, artifact_file)
        plain = json.loads(json.dumps(obj, default=str))
        self._note_redactions(name if safe != plain else None)
        digest = sha256_bytes(data)
        if sha256_tag:
            self.set_tags({sha256_tag: digest})
        return digest

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> str:
        """Log a file (as ``artifact_path/<name>``) or a folder's contents (under
        ``artifact_path``). Returns the artifact path in the run.

        File and folder names are guarded (a file is uploaded under its redacted name). Text files
        are scanned and **refused** (PHIError) when they hold identifiers: a caller's file is never
        rewritten, because the caller may have hashed it.
        """
        src = Path(path)
        if not src.exists():
            raise FileNotFoundError(f"artifact not found: {self._g(src.name, 'artifact name')}")
        adir = self._artifact_dir(artifact_path)
        if src.is_file():
            name = self._g(src.name, "artifact name")
            where = f"{adir}/{name}" if adir else name
            self._check_file(src, where)
            if name != src.name:
                d = Path(tempfile.mkdtemp(dir=self._tmp))
                shutil.copy2(src, d / name)
                self._upload(d / name, adir)
                shutil.rmtree(d, ignore_errors=True)
                self._note_redactions()
            else:
                self._upload(src, adir)
            return where
        files = sorted(p for p in src.rglob("*") if p.is_file())
        renamed = False
        plan: list[tuple[Path, str]] = []
        for f in files:
            rel = f.relative_to(src).as_posix()
            grel = "/".join(self._g(c, "artifact name") for c in rel.split("/"))
            renamed |= grel != rel
            self._check_file(f, f"{adir}/{grel}" if adir else grel)
            plan.append((f, grel))
        if renamed:
            d = Path(tempfile.mkdtemp(dir=self._tmp))
            for f, grel in plan:
                (d / grel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, d / grel)
            retry(lambda: self.client.log_artifacts(self.run_id, str(d), adir))
            shutil.rmtree(d, ignore_errors=True)
            self._note_redactions()
        else:
            retry(lambda: self.client.log_artifacts(self.run_id, str(src), adir))
        return adir or ""

    def _check_file(self, f: Path, where: str) -> None:
        if _is_text(f):
            text = f.read_text("utf-8", errors="replace")
            kinds = self.guard.findings(text)
            if kinds:
                raise PHIError(where, f"refused: text content looks like it contains "
                                      f"{', '.join(kinds)}; medgen never rewrites a caller's "
                                      f"file, log a de-identified copy instead")

    # -- config, manifests, lineage -------------------------------------------------------------
    def log_config(self, cfg: Any, artifact_file: str = "config/resolved.yaml") -> str:
        """Log a resolved config (pydantic model or mapping).

        * params: the flattened config (``a.b.c``), guarded, each cut to MLflow's length limit;
        * artifact ``config/resolved.yaml``: the full YAML (guarded; sorted keys);
        * tag ``medgen.config_sha256``: sha256 of the resolved YAML *before* redaction (what
          ``yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=True)`` gives, i.e.
          :func:`medgen.config.load.dump_config`), so the same config always has the same digest;
          tag ``medgen.config.artifact_sha256``: sha256 of the artifact as logged (equal to the
          former unless something was redacted, which ``medgen.phi.redacted_artifacts`` lists).

        Returns the config sha256.
        """
        import yaml

        data = _to_plain(cfg)
        full = yaml.safe_dump(data, sort_keys=True)
        digest = sha256_bytes(full.encode("utf-8"))
        safe = self.guard.guard_obj(data, where="config")
        logged_yaml = yaml.safe_dump(safe, sort_keys=True)
        data_bytes = logged_yaml.encode("utf-8")
        name = self._write_and_upload(data_bytes, artifact_file)
        # params: the caller's flattened values, guarded one by one (kept for re-checks)
        params = {k: ("" if v is None else v) for k, v in flatten(data).items() if k}
        self.log_params(params)
        self.set_tags({TAG_CONFIG_SHA256: digest,
                       TAG_CONFIG_ARTIFACT_SHA256: sha256_bytes(data_bytes)})
        self._note_redactions(name if logged_yaml != full else None)
        return digest

    def log_manifest(self, path_or_digest: str | os.PathLike, role: str = "train", *,
                     log_file: bool = False) -> str:
        """Record a data manifest's full sha256 in tag ``medgen.manifest.<role>.sha256``.

        ``path_or_digest``: a 64-hex digest (used as is) or a manifest file (its sha256 is taken).
        ``log_file=True`` also uploads the file under ``manifests/<role>/`` (PHI-checked: refused if
        it holds identifiers). Returns the digest.
        """
        if not _ROLE.fullmatch(role):
            raise ValueError(f"manifest role must be a plain word, got {role!r}")
        s = os.fspath(path_or_digest)
        if _HEX64.fullmatch(s) and not Path(s).exists():
            digest = s.lower()
        else:
            p = Path(s)
            if not p.is_file():
                raise FileNotFoundError(f"manifest not found: {self._g(p.name, 'manifest')}")
            digest = sha256_file(p)
            if log_file:
                self.log_artifact(p, f"manifests/{role}")
        self.set_tags({TAG_MANIFEST.format(role=role): digest})
        return digest

    def log_lineage(self, seeds: int | Mapping[str, int] | None = None, *,
                    repo: str | os.PathLike | None = None,
                    packages: Iterable[str] = LINEAGE_PACKAGES) -> dict[str, str]:
        """Record where the code and environment came from; returns the tags set.

        Built by :mod:`medgen.track.lineage` (the one place lineage is worked out). Tags:
        ``medgen.git.commit`` / ``.dirty`` / ``.diff_sha256`` / ``.untracked`` (a count),
        ``medgen.version.<package>``, ``medgen.python``, ``medgen.platform``, ``medgen.torch``,
        ``medgen.torch.cuda``, ``medgen.torch.cudnn``, ``medgen.gpu``, ``medgen.gpu.count``,
        ``medgen.cuda.driver``, ``medgen.seed[.<name>]``, ``medgen.env.lock_sha256``.
        Artifacts: ``lineage/git.diff`` (``git diff HEAD``, guarded; the tag hashes the raw diff)
        and ``lineage/environment.txt`` (``name==version`` of every installed distribution).
        The host name, user name and absolute paths are not recorded. This run's own store files
        never make the code dirty.
        """
        from medgen.track import lineage
        from medgen.track.store import sqlite_path

        db = sqlite_path(self.tracking_uri)
        own = [db, db.with_name(db.name + ".lock"), db.parent / ARTIFACTS_DIR_NAME] if db else []
        git_tags, diff = lineage.git_state(repo, exclude=own)
        if diff:
            self.log_text(diff.decode("utf-8", "replace"), "lineage/git.diff")
        env_tags, lock = lineage.environment_state(packages)
        # package versions only: calendar versions (certifi 2026.10.18) are not patient dates
        self.log_text(lock, "lineage/environment.txt", _dates=False)
        return self.set_tags({**git_tags, **env_tags, **lineage.seed_tags(seeds)})

    # -- figures --------------------------------------------------------------------------------
    def log_figure_grid(self, images: Mapping[str, Any], name: str = "grid",
                        step: int | None = None, *,
                        diff: tuple[str, str] | str | None = "auto") -> str:
        """Log a PNG with one row per image and three orthogonal central planes per row.

        ``images``: label -> 3D array (I, J, K) or torch tensor (leading axes of size 1, i.e.
        MONAI's channel/batch axes, are dropped; 2D arrays get one panel). ``diff=("denoised", "clean")`` adds a ``difference`` row (a - b); the
        default ``"auto"`` does so when both labels exist and ``difference`` is not given.
        Returns the artifact path (``figures/<name>/step_<step>.png``).
        """
        from medgen.track.figures import grid_arrays, render_grid

        arrays = grid_arrays(images, lambda s: self._g(s, "figure label"), diff)
        d = Path(tempfile.mkdtemp(dir=self._tmp))
        fname = f"step_{int(step):07d}.png" if step is not None else "grid.png"
        render_grid(arrays, d / fname)
        adir = self._artifact_dir(f"figures/{name}")
        self._upload(d / fname, adir)
        shutil.rmtree(d, ignore_errors=True)
        return f"{adir}/{fname}"
