"""``DST/ledger.jsonl``: one JSON line per attempt, appended and fsync'd; the latest line wins.

The ledger is always valid JSONL (every line parses on its own, as ``jq`` expects). A line cut
short by a kill (the only way a torn line can appear: lines are appended whole) is repaired when
a job opens the ledger: the file is rewritten without it, atomically, and the repair is logged.
Reading with ``Ledger(path)`` never modifies the file.

Files of the job's state (ledger, quarantine list) are opened with ``O_NOFOLLOW`` and refused when
they are symbolic links or have other hard links: appending to them must never write into
another file (an input). They are created with the same permissions as output files
(``0666 & ~umask``, :func:`medgen.utils.atomic.file_mode`).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from pathlib import Path
from typing import Any

from medgen.errors import ConfigError
from medgen.utils.atomic import atomic_write_bytes, file_mode

log = logging.getLogger("medgen.infer")

LEDGER_NAME = "ledger.jsonl"
LEDGER_VERSION = 1


def check_state_file(path: Path) -> None:
    """Refuse a job state file that is a symbolic link or shares its inode with another name."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError("DST", f"{path.name} is a symbolic link; medgen never writes through "
                          "links (remove it)")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError("DST", f"{path.name} is not a regular file")
    if st.st_nlink > 1:
        raise ConfigError("DST", f"{path.name} has other hard links; medgen never writes into a "
                          "file that is also elsewhere (copy it, then remove the link)")


def append_line(path: Path, line: str) -> None:
    """Append one line (with a trailing newline) and fsync; never through a link."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, file_mode())
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def dumps(entry: dict[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True, allow_nan=False, separators=(",", ":")) + "\n"


class Ledger:
    """The latest ledger line per item (``latest``), and appends.

    Parameters
    ----------
    path : path
        ``DST/ledger.jsonl``.
    repair : bool
        Rewrite the file without torn or invalid lines (a job opening its ledger does this);
        ``False`` only reads.
    """

    def __init__(self, path: str | Path, *, repair: bool = False):
        self.path = Path(path)
        self.latest: dict[str, dict[str, Any]] = {}
        self.bad_lines = 0
        self.repaired = 0
        self._lock = threading.Lock()
        self._tail_checked = False
        if repair:
            check_state_file(self.path)
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good: list[bytes] = []
        for raw in data.split(b"\n"):
            if not raw.strip():
                continue
            try:
                e = json.loads(raw.decode("utf-8"))
                self.latest[str(e["item"])] = e
                good.append(raw)
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                self.bad_lines += 1
        torn_tail = bool(data) and not data.endswith(b"\n")
        if repair and (self.bad_lines or torn_tail):
            self._rewrite(good)
        self._tail_checked = repair

    def _rewrite(self, good: list[bytes]) -> None:
        mode = stat.S_IMODE(os.lstat(self.path).st_mode)
        atomic_write_bytes(self.path, b"".join(g + b"\n" for g in good), mode=mode)
        self.repaired = self.bad_lines
        log.warning("ledger: removed %d torn line(s) of an interrupted write; the ledger is valid "
                    "JSONL again", self.bad_lines)
        self.bad_lines = 0

    def append(self, entry: dict[str, Any]) -> None:
        line = dumps(entry)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self._tail_checked:
                self._cut_torn_tail()
            append_line(self.path, line)
            self.latest[str(entry["item"])] = entry

    def _cut_torn_tail(self) -> None:
        """Truncate a torn last line (no newline) so the next line starts on its own."""
        self._tail_checked = True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW)
        except FileNotFoundError:
            return
        try:
            size = os.fstat(fd).st_size
            if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
                return
            keep, end = 0, size
            while end > 0:  # the last newline, searching back in 1 MiB steps
                start = max(0, end - (1 << 20))
                pos = os.pread(fd, end - start, start).rfind(b"\n")
                if pos >= 0:
                    keep = start + pos + 1
                    break
                end = start
            os.ftruncate(fd, keep)
            os.fsync(fd)
            log.warning("ledger: cut a torn last line (%d bytes) of an interrupted write", size - keep)
        finally:
            os.close(fd)
