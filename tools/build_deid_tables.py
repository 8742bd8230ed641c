"""Convert the PS3.15 facts under ``../shared/data/dicom-ps3.15/`` into medgen's own data files.

Run once per new edition; the outputs under ``medgen/deid/data/`` are committed, so medgen never
reads ``../shared`` at run time and a new edition is a data change (re-run, review the diff, commit).

    python tools/build_deid_tables.py [--src ../shared/data/dicom-ps3.15] [--dst medgen/deid/data]

Writes ``ps315_e1_1.json`` (Table E.1-1, 2024b rows with all ten option columns, plus the 2026c
additions with their basic-profile code) and ``ctp_private_dictionary.json`` (RSNA CTP's private
tag dictionary), each with a provenance block copied from the source's provenance file and the
sha256 of the exact source bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

# option name (CLI) -> (source column, CID 7050 code, code meaning)
OPTIONS = [
    ("retain-safe-private", "retain_safe_private", "113111", "Retain Safe Private Option"),
    ("retain-uids", "retain_uids", "113110", "Retain UIDs Option"),
    ("retain-device-identity", "retain_device_identity", "113109", "Retain Device Identity Option"),
    ("retain-institution-identity", "retain_institution_identity", "113112",
     "Retain Institution Identity Option"),
    ("retain-patient-characteristics", "retain_patient_characteristics", "113108",
     "Retain Patient Characteristics Option"),
    ("retain-long-full-dates", "retain_long_full_dates", "113106",
     "Retain Longitudinal Temporal Information Full Dates Option"),
    ("retain-long-modified-dates", "retain_long_modified_dates", "113107",
     "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("clean-descriptors", "clean_descriptors", "113105", "Clean Descriptors Option"),
    ("clean-structured-content", "clean_structured_content", "113104",
     "Clean Structured Content Option"),
    ("clean-graphics", "clean_graphics", "113103", "Clean Graphics Option"),
]
CODES = {"D", "Z", "X", "K", "C", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mask(row: dict) -> tuple[str | None, str | None]:
    """(tag, mask) - exactly one is set. Masks are 8 hex chars with X wildcards, or 'private'."""
    if not row.get("is_pattern"):
        return row["tag_hex"].upper(), None
    if row["tag_hex"] is None:  # (GGGG,EEEE) where GGGG is odd
        return None, "private"
    return None, row["tag_hex"].upper()


def _row(r: dict, since: str, kw: str | None, vr: str | None) -> dict:
    tag, mask = _mask(r)
    basic = r["basic_profile"]
    if basic not in CODES:
        raise SystemExit(f"unknown basic-profile code {basic!r} in row {r['tag']}")
    opts = {}
    for name, col, _code, _meaning in OPTIONS:
        v = r.get(col)
        if v is not None:
            if v not in CODES:
                raise SystemExit(f"unknown option code {v!r} in row {r['tag']} column {col}")
            opts[name] = v
    return {"tag": tag, "mask": mask, "name": r["name"], "keyword": kw, "vr": vr,
            "basic": basic, "options": opts, "since": since}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    ap.add_argument("--src", type=Path, default=root.parent / "shared" / "data" / "dicom-ps3.15")
    ap.add_argument("--dst", type=Path, default=root / "medgen" / "deid" / "data")
    a = ap.parse_args(argv)

    from pydicom.datadict import dictionary_keyword, dictionary_VR

    src_t = a.src / "ps315_table_e1_1.json"
    src_add = a.src / "ps315_table_e1_1_2026c_additions.json"
    src_ctp = a.src / "ctp_private_tag_dictionary.json"
    base = json.loads(src_t.read_text())
    add = json.loads(src_add.read_text())
    prov_t = json.loads((a.src / "ps315_table_e1_1.provenance.json").read_text())
    prov_add = json.loads((a.src / "ps315_table_e1_1_2026c_additions.provenance.json").read_text())
    prov_ctp = json.loads((a.src / "ctp_private_tag_dictionary.provenance.json").read_text())

    rows = [_row(r, "2024b", r["keyword"], r["vr"]) for r in base]
    have = {r["tag"] for r in rows if r["tag"]}
    n_add = 0
    for r in add:
        t = r["tag_hex"].upper()
        if t in have:
            continue
        try:
            kw, vr = dictionary_keyword(int(t, 16)) or None, dictionary_VR(int(t, 16))
        except KeyError:  # newer than the installed pydicom dictionary
            kw, vr = None, None
        rows.append(_row({**r, "is_pattern": False}, "2026c", kw, vr))
        n_add += 1
    rows.sort(key=lambda r: (r["tag"] or "~" + (r["mask"] or "")))
    table = {
        "schema": 1,
        "edition": "2024b+2026c-additions",
        "editions": {"base": "2024b", "additions": "2026c"},
        "options": [{"name": n, "column": c, "code": k, "meaning": m} for n, c, k, m in OPTIONS],
        "provenance": {
            "base": {**prov_t, "source_file": src_t.name, "sha256": _sha(src_t)},
            "additions": {**prov_add, "source_file": src_add.name, "sha256": _sha(src_add)},
            "converter": "tools/build_deid_tables.py",
        },
        "row_count": len(rows),
        "rows": rows,
    }
    ctp = json.loads(src_ctp.read_text())
    entries = [{"group": e["gp"].upper().zfill(4), "element": e["el"].upper().zfill(2),
                "creator": e["cr"], "vr": e.get("vr"), "vm": e.get("vm"), "name": e.get("key"),
                "code": e["code"]} for e in ctp]
    entries.sort(key=lambda e: (e["creator"], e["group"], e["element"]))
    priv = {"schema": 1, "edition": prov_ctp.get("commit_last_modifying_file", "")[:12],
            "safe_code": "K",
            "provenance": {**prov_ctp, "source_file": src_ctp.name, "sha256": _sha(src_ctp),
                           "converter": "tools/build_deid_tables.py"},
            "entries": entries}
    a.dst.mkdir(parents=True, exist_ok=True)
    (a.dst / "ps315_e1_1.json").write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n")
    (a.dst / "ctp_private_dictionary.json").write_text(
        json.dumps(priv, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} rows ({n_add} from 2026c) and {len(entries)} private entries to {a.dst}")


if __name__ == "__main__":
    main()
