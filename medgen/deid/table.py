"""Table E.1-1 as data: load medgen's versioned copy and resolve one action per attribute.

The rows live in ``medgen/deid/data/ps315_e1_1.json`` (made by ``tools/build_deid_tables.py`` from
the standard's table, with provenance); nothing here hard-codes an attribute's action. A new
edition is a data change.

Resolution of one attribute under a set of options (documented in docs/deid.md):

1. Start from the basic-profile code.
2. Every chosen option whose column has a code for the row overrides it. If two chosen options
   disagree, the more protective wins (C over K): cleaning keeps what is safe, keeping keeps all.
3. Combined codes (X/Z, X/D, Z/D, X/Z/D) are resolved by the attribute's Type in the IOD family of
   the instance (``iod_types.json``): Type 1 -> D, Type 2 -> Z (D where no Z), Type 3 -> X; when
   the Type is unknown, keep the dataset valid: D where offered, else Z. X/Z/U* -> U (keep the
   sequence, remap every UID inside, so references stay valid).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from medgen.errors import ConfigError

OPTION_CONFLICTS = [("retain-long-full-dates", "retain-long-modified-dates")]
_STRENGTH = {"K": 0, "C": 1}


def _load(name: str) -> Any:
    return json.loads(resources.files("medgen.deid").joinpath("data", name).read_text("utf-8"))


@cache
def table_data() -> dict:
    """The raw E.1-1 data file (rows, options, provenance)."""
    return _load("ps315_e1_1.json")


@cache
def allowlist_data() -> dict:
    return _load("allowlist.json")


@cache
def iod_types_data() -> dict:
    return _load("iod_types.json")


@cache
def bids_data() -> dict:
    return _load("bids_keys.json")


@cache
def private_dictionary() -> dict[tuple[int, str, int], str]:
    """(group, creator, element offset) -> CTP code; code 'K' marks a safe private element."""
    d = _load("ctp_private_dictionary.json")
    return {(int(e["group"], 16), e["creator"].strip(), int(e["element"], 16)): e["code"]
            for e in d["entries"]}


def option_names() -> list[str]:
    return [o["name"] for o in table_data()["options"]]


def option_codes() -> dict[str, tuple[str, str]]:
    """option name -> (CID 7050 code value, code meaning)."""
    return {o["name"]: (o["code"], o["meaning"]) for o in table_data()["options"]}


def table_edition() -> str:
    return table_data()["edition"]


def check_options(options: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Validate option names (one-line error naming the nearest valid one); return them sorted."""
    import difflib

    names = option_names()
    for o in options:
        if o not in names:
            near = difflib.get_close_matches(o, names, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else f" (choose from {', '.join(names)})"
            raise ConfigError("--option", f"unknown de-identification option {o!r}{hint}")
    for a, b in OPTION_CONFLICTS:
        if a in options and b in options:
            raise ConfigError("--option", f"{a} and {b} exclude each other")
    return tuple(sorted(set(options)))


@dataclass(frozen=True)
class Row:
    tag: int | None
    mask: str | None
    keyword: str | None
    vr: str | None
    basic: str
    options: dict = field(hash=False)
    since: str = "2024b"

    def code(self, options: tuple[str, ...]) -> str:
        """The (possibly combined) code under ``options``."""
        chosen = [self.options[o] for o in options if o in self.options]
        if not chosen:
            return self.basic
        return max(chosen, key=lambda c: _STRENGTH.get(c, 2))


class Table:
    """Lookup of E.1-1 rows by tag, with the pattern rows (50xx, 60xx, private)."""

    def __init__(self) -> None:
        data = table_data()
        self.edition: str = data["edition"]
        self.by_tag: dict[int, Row] = {}
        self.patterns: list[tuple[int, int, Row]] = []  # (mask bits, value bits, row)
        self.private_row: Row | None = None
        for r in data["rows"]:
            row = Row(int(r["tag"], 16) if r["tag"] else None, r["mask"], r["keyword"], r["vr"],
                      r["basic"], r["options"], r["since"])
            if row.tag is not None:
                self.by_tag[row.tag] = row
            elif row.mask == "private":
                self.private_row = row
            else:
                m = row.mask
                bits = int("".join("0" if c == "X" else "F" for c in m), 16)
                val = int(m.replace("X", "0"), 16)
                self.patterns.append((bits, val, row))
        self.by_keyword = {r.keyword: r for r in self.by_tag.values() if r.keyword}

    def row(self, tag: int) -> Row | None:
        r = self.by_tag.get(tag)
        if r is not None:
            return r
        for bits, val, row in self.patterns:
            if tag & bits == val:
                return row
        return None


@cache
def get_table() -> Table:
    return Table()


def iod_family(sop_class_uid: str | None) -> str:
    if not sop_class_uid:
        return "default"
    for fam, uids in iod_types_data()["families"].items():
        for u in uids:
            if sop_class_uid == u or (u.endswith(".") and sop_class_uid.startswith(u)):
                return fam
    return "default"


def resolve(code: str, keyword: str | None, family: str) -> str:
    """Resolve a combined code to one of D, Z, X, K, C, U (see module docstring)."""
    if "/" not in code:
        return code
    if code == "X/Z/U*":
        return "U"
    types = iod_types_data()["types"].get(keyword or "")
    t = None if types is None else types.get(family, types.get("default"))
    parts = code.split("/")
    if t == "3":
        return "X" if "X" in parts else parts[0]
    if t == "2":
        return "Z" if "Z" in parts else "D"
    if t == "1":
        return "D" if "D" in parts else "Z"
    return "D" if "D" in parts else "Z"  # unsure: keep the dataset valid


@cache
def allowlist(context: bool = False) -> frozenset[int]:
    """Tags kept by default-deny; ``context=True`` adds the cleaned-sequence-only sections."""
    from pydicom.datadict import tag_for_keyword

    d = allowlist_data()
    only = set(d.get("context_only_sections", []))
    out = set()
    for name, kws in d["sections"].items():
        if name in only and not context:
            continue
        for k in kws:
            t = tag_for_keyword(k)
            if t is not None:
                out.add(int(t))
    return frozenset(out)
