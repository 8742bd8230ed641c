"""PHI guard: every string medgen sends to MLflow passes through :class:`PHIGuard` first.

Policy (see docs/tracking.md)
-----------------------------
* Strings that medgen itself serialises (param and tag values, keys, metric keys, config YAML,
  text/JSON artifacts, the git diff, artifact file names) are **redacted**: each identifying-looking
  span is replaced by a placeholder (``REDACTED-name``, ``REDACTED-date``, ``REDACTED-uid``,
  ``REDACTED-id``, ``PATH-<hmac8><ext>`` or ``$root/relative/path``). Placeholders only use the
  characters MLflow allows in keys, so a redacted key is still a valid key.
* Files a caller hands over (:meth:`medgen.track.Run.log_artifact`) are never rewritten, because the
  caller may have hashed them: a text file whose content would need redaction is **refused** with a
  one-line :class:`PHIError` that names the artifact and the kind of identifier, never the value.
  ``strict=True`` turns every redaction into a refusal as well.

What is detected
----------------
* values registered per run (``register``): PatientName, PatientID, accession numbers... matched
  case-insensitively as literals; a DICOM person name ``DOE^JOHN`` also registers ``DOE_JOHN``,
  ``DOE JOHN``, ``JOHN DOE``... and each component of 3 or more letters as a whole word;
* DICOM person names (components separated by ``^``: ``DOE^JOHN``, ``VAN DER BERG^JAN^^DR``);
* dates and date-times: DICOM DA/DT (``YYYYMMDD[HHMMSS[.ffffff]]`` with a plausible year 1900-2099
  and a valid month/day), ISO 8601 (``1970-01-01``, ``1970-01-01T12:00``), ``01/02/1970``,
  ``01.02.1970``, ``1970/01/02``;
* DICOM UIDs (``[012](.digits){3,}``, 10 characters or more). UIDs under the ``2.25.`` root are
  allowed, because medgen derives its own UIDs there (pseudonymous, keyed HMAC); an original
  ``2.25`` UID is only caught once registered;
* absolute paths (POSIX, ``~user``, Windows ``C:\\``, ``file:`` and ``sqlite:`` URIs): a path under a
  declared root becomes ``$name/relative`` (each component still scanned; a component with a hit
  becomes ``REDACTED``), any other becomes ``PATH-<hmac8><ext>``, where the HMAC key is random per
  guard (one run): equal paths map to equal placeholders within the run, but the placeholder cannot
  be reversed by hashing guessed paths.

Runs of 32 or more hex digits (sha256 digests, MLflow run ids) are left alone. Numbers (int, float)
are only checked against registered identifiers, so a learning rate or a seed is never redacted for
looking like a date.

Known limits: free-text names without carets (``John Doe``) and bare patient IDs are only caught
when registered; binary artifacts (PNG, safetensors) are not scanned.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any

from medgen.errors import MedgenError

__all__ = ["PHIError", "PHIGuard", "phi_guard", "phi_findings"]


class PHIError(MedgenError):
    """A value bound for MLflow looks identifying and may not be redacted (strict mode, or a
    caller's file). The message names where and what kind, never the value."""


# --- detectors ---------------------------------------------------------------------------------

_HEX_RUN = re.compile(r"[0-9a-fA-F]{32,}")

_MONTH = r"(?:0[1-9]|1[0-2])"
_DAY = r"(?:0[1-9]|[12]\d|3[01])"
_YEAR = r"(?:19|20)\d\d"
_TIME = r"(?:[T ]?(?:[01]\d|2[0-3])(?::?[0-5]\d){0,2}(?:\.\d{1,6})?(?:Z|[-+&]\d{2}:?\d{2})?)?"

_DATE_PATTERNS = [
    # DICOM DA / DT: YYYYMMDD[HH[MM[SS[.ffffff]]]][&ZZXX]
    re.compile(
        rf"(?<!\d)(?<!\d\.){_YEAR}{_MONTH}{_DAY}(?:[01]\d|2[0-3])?(?:[0-5]\d){{0,2}}(?:\.\d{{1,6}})?"
        rf"(?:[+&-]\d{{4}})?(?!\d)"
    ),
    # ISO 8601 and Y/M/D with separators
    re.compile(rf"(?<!\d)(?<!\d\.){_YEAR}([-/.]){_MONTH}\1{_DAY}{_TIME}(?!\d)"),
    # D/M/Y or M/D/Y with separators
    re.compile(rf"(?<!\d)(?<!\d\.)(?:0?[1-9]|[12]\d|3[01])([-/.])(?:0?[1-9]|[12]\d|3[01])\1{_YEAR}(?!\d)"),
]

# DICOM PN: at least one letter-led component before a caret; up to 3 space-separated words either
# side (multi-word family names). Over-redaction in free text is accepted.
_PERSON_NAME = re.compile(
    r"(?:[A-Za-z][\w'\-.]* ){0,3}[A-Za-z][\w'\-.]*\^(?=[A-Za-z'^]|\s|$)[\w'\-.^]*(?: [A-Za-z][\w'\-.^]*){0,3}"
)

_UID = re.compile(r"(?<![0-9A-Za-z])(?<!\d\.)[0-2](?:\.(?:0|[1-9]\d*)){3,}(?![0-9A-Za-z])(?!\.\d)")
_ALLOWED_UID_ROOT = "2.25."

# absolute paths: POSIX (after start, whitespace, quote, '=', ':' or '('), ~user, Windows drive
_PATH_CHARS = r"[^\s'\"<>|,;()\[\]{}]"
_URI_WITH_PATH = re.compile(rf"\b(?:file|sqlite):/*(/{_PATH_CHARS}*)")
_POSIX_PATH = re.compile(rf"(?:(?<=^)|(?<=[\s'\"=(\[,]))(?:/|~[A-Za-z_][\w.-]*/?){_PATH_CHARS}*")
_WIN_PATH = re.compile(rf"(?<![\w])[A-Za-z]:[\\/]{_PATH_CHARS}*")
_EXT = re.compile(r"(\.[A-Za-z][A-Za-z0-9]{0,5}(?:\.gz)?)$")

_SPLIT_NAME = re.compile(r"[\^_ \-.,]+")


def _identifier_variants(value: str) -> tuple[set[str], set[str]]:
    """(literal variants, whole-word components) for one registered identifier."""
    v = value.strip()
    literals: set[str] = set()
    words: set[str] = set()
    if not v:
        return literals, words
    literals.add(v)
    parts = [p for p in _SPLIT_NAME.split(v) if p]
    if "^" in v or len(parts) > 1:
        for sep in ("^", "_", " ", "-", ".", ""):
            literals.add(sep.join(parts))
            literals.add(sep.join(reversed(parts)))
        if "^" in v:  # a person name: each component is itself identifying
            words.update(p for p in parts if len(p) >= 3 and not p.isdigit())
    return {x for x in literals if len(x) >= 2}, words


class PHIGuard:
    """Scans and redacts strings before they reach MLflow.

    Parameters
    ----------
    roots
        Mapping ``name -> absolute folder``: a path under a root is logged as ``$name/rel/path``.
    identifiers
        Values (PatientName, PatientID, ...) that must never appear; see :meth:`register`.
    strict
        Raise :class:`PHIError` instead of redacting.
    """

    def __init__(self, roots: Mapping[str, str | os.PathLike] | None = None,
                 identifiers: Iterable[Any] | None = None, strict: bool = False):
        self.strict = strict
        self._key = secrets.token_bytes(32)
        self._literals: set[str] = set()
        self._words: set[str] = set()
        self._ident_re: re.Pattern[str] | None = None
        self.roots: dict[str, str] = {}
        self.redactions = 0
        for name, root in (roots or {}).items():
            self.add_root(name, root)
        if identifiers:
            self.register(identifiers)

    # -- configuration --------------------------------------------------------------------------
    def add_root(self, name: str, root: str | os.PathLike) -> None:
        """Declare a folder whose paths are logged relative to it as ``$name/...``."""
        if not re.fullmatch(r"[A-Za-z][\w-]*", name):
            raise ValueError(f"root name must be a plain word, got {name!r}")
        self.roots[name] = os.path.normpath(os.path.abspath(os.fspath(root)))

    def register(self, values: Iterable[Any]) -> int:
        """Register identifying values for this run; returns how many patterns were added."""
        if isinstance(values, (str, bytes)):
            values = [values]
        n0 = len(self._literals) + len(self._words)
        for v in values:
            if v is None:
                continue
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            lit, words = _identifier_variants(str(v))
            self._literals |= lit
            self._words |= words
        # whole-token matches only, so a short PatientID does not eat parts of other numbers
        alts = [re.escape(x) for x in sorted(self._literals | self._words, key=len, reverse=True)]
        self._ident_re = (re.compile(r"(?<![A-Za-z0-9])(?:" + "|".join(alts) + r")(?![A-Za-z0-9])",
                                     re.IGNORECASE) if alts else None)
        return len(self._literals) + len(self._words) - n0

    def strict_copy(self) -> PHIGuard:
        """A guard with the same roots, identifiers and path key that refuses instead of redacting."""
        g = PHIGuard(strict=True)
        g._key, g.roots = self._key, dict(self.roots)
        g._literals, g._words, g._ident_re = set(self._literals), set(self._words), self._ident_re
        return g

    # -- scanning -------------------------------------------------------------------------------
    def findings(self, text: str) -> list[str]:
        """Kinds of identifier found in ``text`` (empty list: clean). Never returns the values."""
        kinds: list[str] = []
        self._scan(text, kinds)
        return sorted(set(kinds))

    def guard(self, value: Any, *, where: str = "value", dates: bool = True) -> str:
        """Return ``value`` as a string safe for MLflow (redacted), or raise in strict mode.

        ``dates=False`` skips the date patterns (only for text that cannot hold a patient date,
        e.g. package versions: calendar versions such as ``2026.10.18`` look like dates)."""
        if isinstance(value, bool) or value is None:
            return str(value)
        if isinstance(value, (int, float)):
            text = repr(value) if isinstance(value, float) else str(value)
            kinds: list[str] = []
            out = self._sub_identifiers(text, kinds)
            return self._finish(text, out, kinds, where)
        text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
        kinds = []
        out = self._scan(text, kinds, dates)
        return self._finish(text, out, kinds, where)

    def guard_obj(self, obj: Any, *, where: str = "value") -> Any:
        """Recursively guard a JSON-like structure (dict keys and string leaves; numbers only
        against registered identifiers). Tuples become lists."""
        if isinstance(obj, Mapping):
            return {self.guard(k, where=f"{where} key"): self.guard_obj(v, where=where)
                    for k, v in obj.items()}
        if isinstance(obj, (list, tuple, set, frozenset)):
            seq = sorted(obj, key=str) if isinstance(obj, (set, frozenset)) else obj
            return [self.guard_obj(v, where=where) for v in seq]
        if obj is None or isinstance(obj, bool):
            return obj
        if isinstance(obj, (int, float)):
            g = self.guard(obj, where=where)
            return obj if g == (repr(obj) if isinstance(obj, float) else str(obj)) else g
        return self.guard(obj, where=where)

    def check(self, text: str, *, where: str) -> None:
        """Raise :class:`PHIError` if ``text`` holds anything the guard would redact."""
        kinds = self.findings(text)
        if kinds:
            raise PHIError(where, f"refused: looks like it contains {', '.join(kinds)}")

    # -- internals ------------------------------------------------------------------------------
    def _finish(self, text: str, out: str, kinds: list[str], where: str) -> str:
        if out != text:
            if self.strict:
                raise PHIError(where, f"refused: looks like it contains {', '.join(sorted(set(kinds)))}")
            self.redactions += 1
        return out

    def _sub_identifiers(self, text: str, kinds: list[str]) -> str:
        if self._ident_re is None:
            return text

        def rep(_m: re.Match[str]) -> str:
            kinds.append("a registered identifier")
            return "REDACTED-id"

        return self._ident_re.sub(rep, text)

    def _scan(self, text: str, kinds: list[str], dates: bool = True) -> str:
        # hex digests (sha256, run ids) are kept verbatim: scan only what lies between them
        out: list[str] = []
        pos = 0
        for m in _HEX_RUN.finditer(text):
            out.append(self._scan_segment(text[pos:m.start()], kinds, dates))
            out.append(m.group(0))
            pos = m.end()
        out.append(self._scan_segment(text[pos:], kinds, dates))
        return "".join(out)

    def _scan_segment(self, text: str, kinds: list[str], dates: bool = True) -> str:
        if not text:
            return text
        # paths first: a path under a root is rebuilt component by component (a component with
        # any hit becomes REDACTED), any other path is replaced whole
        text = _URI_WITH_PATH.sub(lambda m: m.group(0)[: m.start(1) - m.start(0)]
                                  + self._path(m.group(1), kinds), text)
        text = _WIN_PATH.sub(lambda m: self._path(m.group(0), kinds), text)
        text = _POSIX_PATH.sub(lambda m: self._path(m.group(0), kinds), text)
        text = self._sub_identifiers(text, kinds)
        return self._sub_patterns(text, kinds, dates)

    def _sub_patterns(self, text: str, kinds: list[str], dates: bool = True) -> str:
        def name(_m: re.Match[str]) -> str:
            kinds.append("a person name")
            return "REDACTED-name"

        def uid(m: re.Match[str]) -> str:
            u = m.group(0)
            if len(u) < 10 or u.startswith(_ALLOWED_UID_ROOT):
                return u
            kinds.append("a DICOM UID")
            return "REDACTED-uid"

        def date(_m: re.Match[str]) -> str:
            kinds.append("a date")
            return "REDACTED-date"

        text = _PERSON_NAME.sub(name, text)
        text = _UID.sub(uid, text)
        for pat in _DATE_PATTERNS if dates else ():
            text = pat.sub(date, text)
        return text

    def _path(self, raw: str, kinds: list[str]) -> str:
        if raw.startswith("REDACTED") or raw.startswith("PATH-") or raw.startswith("$"):
            return raw
        if raw in ("/", "//") or re.fullmatch(r"/+\d*", raw):
            return raw
        windows = bool(re.match(r"[A-Za-z]:[\\/]", raw))
        norm = raw.replace("\\", "/") if windows else raw
        if not windows and norm.startswith("~"):
            norm = os.path.expanduser(norm) if norm.startswith("~/") else norm
        for name, root in sorted(self.roots.items(), key=lambda kv: len(kv[1]), reverse=True):
            np_ = os.path.normpath(norm) if not windows else norm
            if np_ == root or np_.startswith(root.rstrip("/") + "/"):
                rel = PurePosixPath(os.path.relpath(np_, root)).parts if np_ != root else ()
                parts = []
                for comp in rel:
                    sub: list[str] = []
                    clean = self._sub_patterns(self._sub_identifiers(comp, sub), sub)
                    if sub:
                        kinds.extend(sub)
                        parts.append("REDACTED")
                    else:
                        parts.append(clean)
                if not parts:
                    return f"${name}"
                return f"${name}/" + "/".join(parts) + ("/" if raw.endswith("/") else "")
        kinds.append("an absolute path")
        digest = hmac.new(self._key, norm.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:8]
        m = _EXT.search(norm.rstrip("/"))
        return f"PATH-{digest}{m.group(1) if m else ''}"


def phi_guard(value: Any, *, roots: Mapping[str, str] | None = None,
              identifiers: Iterable[Any] | None = None, strict: bool = False) -> str:
    """One-shot :meth:`PHIGuard.guard` (a fresh guard: path placeholders differ between calls).

    Examples
    --------
    >>> phi_guard("DOE^JOHN")
    'REDACTED-name'
    >>> phi_guard("scan 19700101")
    'scan REDACTED-date'
    """
    return PHIGuard(roots=roots, identifiers=identifiers, strict=strict).guard(value)


def phi_findings(text: str, *, identifiers: Iterable[Any] | None = None) -> list[str]:
    """Kinds of identifier found in ``text`` (for tests and audits)."""
    return PHIGuard(identifiers=identifiers).findings(text)
