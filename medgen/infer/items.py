"""Items of a batch job, their ids, and the ONE rule that names their outputs.

An :class:`Item` is one unit of work: a NIfTI file, a DICOM series (or one enhanced multi-frame
file), a manifest record - or, from a plug-in source (a PACS query, issue 16), a series fetched
from elsewhere. Sources (:mod:`medgen.infer.sources`) describe what they found as :class:`Unit`
objects and hand them to :func:`name_outputs`, which is the only place output paths are made:

* NIfTI ``a/b/x.nii.gz`` -> ``a/b/x.nii.gz`` (``x/`` as a DICOM series with ``--output-format
  dicom``);
* the DICOM series in folder ``a/b/`` -> ``a/b/`` (a derived series; ``a/b.nii.gz`` as NIfTI), or
  ``a/b/series-<id8>/`` when that folder also holds other items (another series, NIfTI files,
  sub-folders with items), so that no output folder ever contains another item's output;
* one multi-frame file ``a/b/mf.dcm`` -> ``a/b/mf/``; a series at the root -> ``series-<id8>/``.

Two items that would get the same output are refused (both named). Whether an output path is
*safe* (inside DST, not an input) is the sink's check (:mod:`medgen.infer.sinks`), made once at
discovery and again just before writing.

Item ids are keyed pseudonyms: HMAC-SHA256 of (kind, relative input path) under a random key kept
in DST (``DST/.medgen-item-key``, mode 0600, never logged or uploaded) - stable for resume in that
DST, not reversible by hashing guessed names (``MRN12345678.nii.gz``). Manifest items use the
manifest's record ids (keyed with the pseudonymisation key when the manifest was built).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ITEM_KEY_NAME = ".medgen-item-key"


@dataclass(frozen=True)
class Item:
    """One unit of work.

    Attributes
    ----------
    id : str
        Keyed, non-identifying id (16 hex digits).
    kind : str
        ``nifti``, ``dicom`` or ``reject`` (refused at discovery; plug-in sources may add kinds).
    rel : str
        Input path relative to ``root`` (file, or folder of a series; ``.`` for the root). Kept in
        the local ledger and on stderr only, never in MLflow.
    files : tuple of str
        Input references (absolute paths for file sources; in memory only, never logged).
    root : str
        Input root (errors name files relative to it).
    out_rel : str, optional
        Output path relative to DST (a ``.nii.gz`` file or a DICOM series folder).
    out_format : {"nifti", "dicom"}, optional
    error : str, optional
        Why the item was refused at discovery (one line; it is quarantined unread).
    expected : tuple of (relpath, sha256), optional
        File digests from a manifest; a mismatch quarantines the item.
    """

    id: str
    kind: str
    rel: str
    files: tuple[str, ...]
    root: str
    out_rel: str | None = None
    out_format: str | None = None
    error: str | None = None
    expected: tuple[tuple[str, str], ...] | None = None

    def file_rels(self) -> list[str]:
        return [relpath(f, self.root) for f in self.files]

    def refused(self, reason: str) -> Item:
        """This item refused at discovery (no output) with a one-line reason."""
        return Item(self.id, "reject", self.rel, self.files, self.root, None, None, reason,
                    self.expected)


@dataclass
class Unit:
    """What a source found, before naming: the input of one future :class:`Item`.

    ``own_folder``: the unit is a DICOM series that owns its folder ``rel`` (its output is a
    folder mirroring it); otherwise ``rel`` names a file. ``id`` is set by sources that have one
    (manifest records); others get a keyed id from the relative path. ``error`` makes a refused
    item (``label`` then names it in the message, e.g. ``record 3f2a...``).
    """

    kind: str
    rel: str
    files: list[Path]
    own_folder: bool = False
    id: str | None = None
    expected: tuple[tuple[str, str], ...] | None = None
    error: str | None = None
    label: str | None = None
    file_rels: list[str] = field(default_factory=list)


def relpath(path: str | Path, root: str | Path) -> str:
    """``path`` relative to ``root`` (POSIX), or its name when it is not below ``root``."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).name


# --------------------------------------------------------------------------- ids


def item_id(kind: str, key: str, secret: bytes) -> str:
    """Keyed id of an item from its kind and relative input path (16 hex digits)."""
    msg = f"medgen-infer-item-v2\0{kind}\0{key}".encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()[:16]


def item_key(dst: str | Path | None) -> bytes:
    """The id key of DST (created on first use: 32 random bytes, mode 0600); a throw-away key
    when there is no DST (ids then only mean something within one call)."""
    if dst is None:
        return secrets.token_bytes(32)
    path = Path(dst) / ITEM_KEY_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:  # another process made it first
            return item_key(dst)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.hex().encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        return key
    with os.fdopen(fd, "rb") as fh:
        text = fh.read(200).strip()
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) < 32:
        from medgen.errors import ConfigError

        raise ConfigError("DST", f"{ITEM_KEY_NAME} is damaged; remove it to start the ledger over")
    return key


# --------------------------------------------------------------------------- output naming


def strip_ext(rel: str) -> str:
    low = rel.lower()
    for ext in (".nii.gz", ".nii", ".dcm", ".ima"):
        if low.endswith(ext):
            return rel[: -len(ext)]
    return rel


def output_rel(kind: str, rel: str, fmt: str, *, own_folder: bool, crowded: bool, iid: str) -> str:
    """THE output path (relative to DST) of an input at ``rel`` (see the module docstring)."""
    if kind == "nifti" and not own_folder:
        if fmt == "nifti":
            return rel if rel.lower().endswith((".nii", ".nii.gz")) else rel + ".nii.gz"
        return strip_ext(rel)
    base = rel if own_folder else strip_ext(rel)
    if crowded:
        base = f"series-{iid[:8]}" if rel in (".", "") else f"{rel}/series-{iid[:8]}"
    elif base in (".", ""):
        base = f"series-{iid[:8]}"
    return base + ".nii.gz" if fmt == "nifti" else base


def _crowded(idx: int, units: Sequence[Unit]) -> bool:
    """A series folder shared with another item's files (or the root itself); refused files
    (non-images next to a series) do not count - they get no output."""
    u = units[idx]
    if not (u.kind == "dicom" and u.own_folder):
        return False
    if u.rel in (".", ""):
        return True
    prefix = u.rel + "/"
    return any(j != idx and o.error is None and any(fr.startswith(prefix) for fr in o.file_rels)
               for j, o in enumerate(units))


def name_outputs(units: Sequence[Unit], root: str | Path, output_format: str, secret: bytes
                 ) -> list[Item]:
    """Items (ids, output paths) for ``units`` found under ``root``; the only naming code.

    ``output_format`` ``auto`` keeps each input's format, ``nifti`` / ``dicom`` convert. Two
    units that would write the same output are both refused.
    """
    root = str(root)
    for u in units:
        if not u.file_rels:
            u.file_rels = [relpath(f, root) for f in u.files]
    items: list[Item] = []
    owner: dict[str, int] = {}
    for idx, u in enumerate(units):
        files = tuple(str(f) for f in u.files)
        if u.error is not None:
            iid = u.id or item_id("reject", u.rel, secret)
            items.append(Item(iid, "reject", u.rel, files, root, None, None, u.error, u.expected))
            continue
        crowded = _crowded(idx, units)
        key = f"{u.rel}#{u.file_rels[0].rsplit('/', 1)[-1]}" if crowded and u.id is None else u.rel
        iid = u.id or item_id(u.kind, key, secret)
        fmt = u.kind if output_format == "auto" else output_format
        out = output_rel(u.kind, u.rel, fmt, own_folder=u.own_folder, crowded=crowded, iid=iid)
        items.append(Item(iid, u.kind, u.rel, files, root, out, fmt, None, u.expected))
        if out in owner:  # refuse both: neither may silently win
            other = owner[out]
            items[other] = items[other].refused(
                f"{items[other].rel}: output path clashes with {u.rel}'s; rename one of them")
            items[-1] = items[-1].refused(
                f"{u.rel}: output path clashes with {items[other].rel}'s; rename one of them")
        else:
            owner[out] = len(items) - 1
    items.sort(key=lambda it: (it.rel, it.id))
    return items
