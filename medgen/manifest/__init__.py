"""Data manifests: one JSON record per volume/series, with sha256 of every file and a digest.

A manifest is a JSONL file (one :class:`Record` per line) plus ``<name>.summary.json`` (digest,
counts, key fingerprint, root relative to the manifest) and, when anything was refused,
``<name>.rejects.jsonl``. The **manifest digest** is the sha256 of the canonical form of the records
(sorted by id, canonical JSON) - a pure function of the records, cited by runs and audits.

No PHI: ids and subject keys are keyed hashes (HMAC with the project key); no names, patient IDs,
dates or original UIDs appear in clear. Paths are relative to a root the user gives.
"""

from medgen.manifest.records import FileEntry, Manifest, Record, manifest_digest

__all__ = ["FileEntry", "Manifest", "Record", "manifest_digest"]
