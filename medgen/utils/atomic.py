"""Atomic outputs: a file or a whole folder appears complete or not at all.

Pattern: write to a temporary sibling (same filesystem), fsync it, then ``os.replace`` it into place
and fsync the parent directory so the rename itself is durable. Temporary names start with
``.medgen-tmp-`` so an interrupted job's leftovers are recognisable and cleaned by ``clean_temp``.

Permissions (the umask rule): whatever medgen writes gets the mode an ordinary ``open()`` /
``mkdir()`` would give it - files ``0666 & ~umask``, folders ``0777 & ~umask`` - not the private
``0600`` / ``0700`` of the temporary names it is built under. Set the umask of the job (e.g.
``umask 027`` for group-readable outputs, ``umask 077`` for private ones) to choose; secrets
(key files) are created ``0600`` explicitly and never through these helpers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

TMP_PREFIX = ".medgen-tmp-"


def umask() -> int:
    """The process umask, read without changing it (Linux ``/proc``; elsewhere set-and-restore,
    which is not thread-safe, so only where ``/proc`` is missing)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)  # pragma: no cover - not Linux
    os.umask(old)
    return old


def file_mode() -> int:
    """Mode of a file medgen writes: ``0o666 & ~umask``."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """Mode of a folder medgen writes: ``0o777 & ~umask``."""
    return 0o777 & ~umask()


def fsync_dir(path: str | Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root``, giving each the umask-rule mode."""
    fmode, dmode = file_mode(), dir_mode()
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, dmode)
        for name in filenames:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                continue
            with open(p, "rb") as fh:
                os.fchmod(fh.fileno(), fmode)
                os.fsync(fh.fileno())
        fsync_dir(dirpath)


@contextlib.contextmanager
def atomic_path(final: str | Path, *, suffix: str | None = None,
                mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success fsync and rename it into place.

    The suffix of ``final`` is kept on the temporary name (``.nii.gz`` included) so writers that
    pick a format by extension behave the same. The file gets ``mode`` (default
    :func:`file_mode`) before it appears under its final name.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(final.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=suffix, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fchmod(fh.fileno(), file_mode() if mode is None else mode)
            os.fsync(fh.fileno())
        os.replace(tmp_path, final)
        fsync_dir(final.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(final: str | Path, data: bytes, *, mode: int | None = None) -> Path:
    with atomic_path(final, mode=mode) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def atomic_write_text(final: str | Path, text: str) -> Path:
    return atomic_write_bytes(final, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary folder; on success fsync every file and rename the folder into place.

    An existing ``final`` folder is replaced (moved aside, then removed) only after the new one is
    complete, so readers see either the old or the new series, never a mix.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=final.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + "old-", dir=final.parent))
            os.replace(final, old / "x")
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def clean_temp(root: str | Path) -> int:
    """Remove leftovers of interrupted atomic writes under ``root``; return how many."""
    n = 0
    for p in sorted(Path(root).rglob(TMP_PREFIX + "*"), key=lambda q: len(q.parts), reverse=True):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        n += 1
    return n
