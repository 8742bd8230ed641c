"""Paths from untrusted sources: keep them inside their root.

Every path that comes from data (a manifest record, a folder walk, a DICOM attribute, a pipeline
variable) is *relative to a declared root* and must stay inside it, whatever ``..``, absolute
prefixes or symbolic links it carries. Outputs must resolve inside ``DST`` and must never be one of
the inputs. ``pathlib`` has no "join but stay inside" operation, hence these few functions.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from medgen.errors import UnsafePathError

_WINDOWS_ABS = re.compile(r"^(?:[A-Za-z]:|\\\\|//)")


def is_inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """True when ``path`` (after resolving symlinks and ``..``) lies inside ``root`` or is it."""
    p = Path(os.path.realpath(path))
    r = Path(os.path.realpath(root))
    return p == r or r in p.parents


def check_relative(rel: str, *, what: str = "path") -> PurePosixPath:
    """Validate a relative path text from an untrusted source and return it as a POSIX path.

    Refuses absolute paths (POSIX or Windows style), NUL bytes, backslashes used as separators
    and any ``..`` component: a record may name files below its root only.
    """
    if not isinstance(rel, str) or not rel.strip():
        raise UnsafePathError(what, "empty path")
    if "\x00" in rel:
        raise UnsafePathError(what, "path contains a NUL byte")
    if rel.startswith("/") or _WINDOWS_ABS.match(rel):
        raise UnsafePathError(what, "absolute path; paths must be relative to the root")
    if "\\" in rel:
        raise UnsafePathError(what, "backslash in path; use '/' separators relative to the root")
    pure = PurePosixPath(rel)
    if any(part == ".." for part in pure.parts):
        raise UnsafePathError(what, "path escapes its root ('..')")
    return pure


def resolve_inside(root: str | os.PathLike, rel: str, *, what: str = "path") -> Path:
    """Join ``rel`` (untrusted, relative) onto ``root`` and prove the result stays inside it.

    Symbolic links are followed for the check, so a link that points out of ``root`` is refused
    too. Returns the joined (unresolved) path.
    """
    pure = check_relative(rel, what=what)
    joined = Path(root) / Path(*pure.parts)
    if not is_inside(joined, root):
        raise UnsafePathError(what, "path resolves outside its root (symbolic link?)")
    return joined


def output_path(dst: str | os.PathLike, rel: str, *, inputs: Iterable[str | os.PathLike] = (),
                what: str = "output") -> Path:
    """The output file/folder for ``rel`` under ``dst``: inside ``dst`` and never an input.

    ``inputs`` are the item's input files; an output that is (or would overwrite) one of them -
    same path after resolution, or same inode through a hard link - is refused.
    """
    out = resolve_inside(dst, rel, what=what)
    real = os.path.realpath(out)
    for f in inputs:
        if os.path.realpath(f) == real:
            raise UnsafePathError(what, "output would overwrite an input file")
        if os.path.exists(out):
            try:
                if os.path.samefile(f, out):
                    raise UnsafePathError(what, "output is the same file as an input (hard link)")
            except OSError:
                pass
    return out
