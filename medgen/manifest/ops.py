"""Manifest operations: subject-level splits and validation against the files on disk."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from medgen.errors import ConfigError
from medgen.manifest.records import Manifest, Record
from medgen.utils.hashing import sha256_file


def split_manifest(manifest: Manifest, ratios: dict[str, float], seed: int = 0) -> Manifest:
    """Assign ``split`` by subject: every subject's records land in exactly one split.

    Subjects are ordered by sha256(seed, subject) - deterministic for a seed, independent of the
    order of records - and cut by cumulative ratio, each non-empty split getting at least one
    subject when there are enough subjects.
    """
    if not ratios or any(v < 0 for v in ratios.values()) or sum(ratios.values()) <= 0:
        raise ConfigError("--ratios", "ratios must be non-negative and sum to more than 0")
    total = sum(ratios.values())
    names = list(ratios)
    subjects = sorted({r.subject for r in manifest.records},
                      key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    n = len(subjects)
    counts = [int(round(ratios[k] / total * n)) for k in names]
    # make the counts sum to n, then make sure every split with a positive ratio gets one subject
    while sum(counts) > n:
        counts[counts.index(max(counts))] -= 1
    while sum(counts) < n:
        counts[counts.index(max(counts))] += 1
    for i, k in enumerate(names):
        if ratios[k] > 0 and counts[i] == 0 and n >= len([v for v in ratios.values() if v > 0]):
            j = counts.index(max(counts))
            counts[j] -= 1
            counts[i] += 1
    assign = {}
    pos = 0
    for k, c in zip(names, counts):
        for s in subjects[pos:pos + c]:
            assign[s] = k
        pos += c
    out = [r.model_copy(update={"split": assign[r.subject]}) for r in manifest.records]
    return Manifest(out, manifest.root, None, dict(manifest.summary))


@dataclass
class ValidationReport:
    ok: int = 0
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.missing and not self.changed


def validate_manifest(manifest: Manifest) -> ValidationReport:
    """Re-hash every file; name the missing and the changed ones (paths relative to the root)."""
    rep = ValidationReport()
    for rec in manifest.records:
        for fe, p in zip(rec.files, manifest.paths(rec)):
            if not p.exists():
                rep.missing.append(fe.path)
            elif p.stat().st_size != fe.size or sha256_file(p) != fe.sha256:
                rep.changed.append(fe.path)
            else:
                rep.ok += 1
    return rep


def records_by_split(manifest: Manifest, split: str | None) -> list[Record]:
    return list(manifest.records) if split is None else manifest.split(split)
