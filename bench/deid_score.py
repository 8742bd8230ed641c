"""A MIDI-B-style score: correct actions / required actions, for medgen, dicognito, dicom-anonymizer.

    python bench/deid_score.py [--copies 6] [--benchlibs /tmp/benchlibs]

Corpus: real files nobody on the team wrote (pydicom's CT_small, MR_small, a 512x512 CT slice,
RT plan; real ultrasound US1_UNCR / OBXXXX1A and the secondary capture SC_rgb), each copied
``--copies`` times with **planted PHI** (synthetic, unique per copy, recorded in an answer key):

* header - PatientName, PatientID, AccessionNumber, birth date, institution, referring physician,
  telephone, address, other IDs;
* sequences - names, IDs and UIDs two levels deep (RequestAttributesSequence,
  ReferencedStudySequence, OtherPatientIDsSequence);
* private - a private block with a name, an ID and free text;
* free text - ImageComments / AdditionalPatientHistory sentences mentioning the patient's name,
  ID and a date;
* dates - StudyDate / SeriesDate / ContentDate (must be shifted or removed, never kept);
* UIDs - Study/Series/SOP instance UIDs (remapped: different, and the same mapping for every file
  of a study so references stay valid);
* pixels - the patient's name, ID and date rendered into the image of every US and SC copy
  (every frame);
* keep - what research needs and no identifier: Modality, Rows, Columns, PixelSpacing,
  SliceThickness, the pixels of non-annotated images, the image region outside planted text.

Required actions per element: remove-or-replace (value gone), replace (present, different,
consistent), shift-or-remove (date changed or gone), remap-uid (different, consistent,
valid), redact-pixels (>= 95% of the planted text's pixels changed), keep (value unchanged). A
file that a tool does not output (quarantined, failed) scores every one of its actions as not
done. Printed: correct / required overall and per category, and files kept vs not.

medgen runs with ``retain-long-modified-dates`` (dates shifted, the TCIA practice) and its default
OCR; where its PS3.15 basic profile removes descriptors that TCIA keeps (StudyDescription,
SeriesDescription, ProtocolName), the key asks for the identifier to be gone, not for the text to
be kept (see docs/deid.md "Score").
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

BASES = [("CT_small.dcm", "CT"), ("MR_small.dcm", "MR"), ("693_UNCI.dcm", "CT"),
         ("rtplan.dcm", "RTPLAN"), ("US1_UNCR.dcm", "US"), ("OBXXXX1A.dcm", "US"),
         ("SC_rgb.dcm", "SC")]
FIRST = ["ZEBEDEE", "QUILLON", "MARISOL", "THADDEUS", "OPHELIA", "BARNABY", "LUCRETIA", "OSWIN"]
LAST = ["HAVERSHAM", "PUMBLECHOOK", "WICKFIELD", "MURDSTONE", "SKIMPOLE", "CHUZZLEWIT",
        "HEEP", "GRADGRIND"]


def _item(**kw):
    from pydicom.dataset import Dataset

    d = Dataset()
    for k, v in kw.items():
        setattr(d, k, v)
    return d


def _free_corner(frame, w: int = 270, h: int = 56) -> tuple[int, int]:
    """The image corner with the least content (where a scanner's text band would be)."""
    import numpy as np

    a = np.asarray(frame, dtype=np.float64)
    a = a.sum(axis=-1) if a.ndim == 3 else a
    rows, cols = a.shape
    cands = [(4, 2), (cols - w - 4, 2), (4, rows - h - 2), (cols - w - 4, rows - h - 2)]
    return min(cands, key=lambda xy: a[xy[1]: xy[1] + h, xy[0]: xy[0] + w].sum())


def _white(ds, f) -> object:
    """The stored value that shows as white: the brightest palette entry for palette images."""
    import numpy as np

    if str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        lut = apply_color_lut(np.arange(256, dtype=np.uint8), ds)
        return int(np.argmax(lut.astype(np.int64).sum(axis=-1)))
    return (255, 255, 255) if f.ndim == 3 else int(f.max())


def _render(ds, lines: list[str]) -> None:
    """Burn ``lines`` into every frame's emptiest corner, in white (as a scanner would)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    arr = ds.pixel_array
    frames = arr if int(ds.get("NumberOfFrames", 1) or 1) > 1 else arr[None]
    out = []
    font = ImageFont.load_default(size=15)
    x0, y0 = _free_corner(frames[0])
    for f in frames:
        img = Image.fromarray(f)
        d = ImageDraw.Draw(img)
        for i, text in enumerate(lines):
            d.text((x0, y0 + 17 * i), text, fill=_white(ds, f), font=font)
        out.append(np.asarray(img))
    new = np.stack(out) if len(out) > 1 else out[0]
    ds.PixelData = new.astype(arr.dtype).tobytes()


def plant(ds, idx: int, patient: int, modality: str) -> dict:
    """Plant PHI in ``ds``; return its answer key: element -> (category, action, value)."""
    from pydicom.sequence import Sequence

    first, last = FIRST[patient % len(FIRST)], LAST[patient % len(LAST)]
    pid, acc = f"PID{48213 + patient:07d}", f"ACC{70000 + idx:06d}"
    study = f"1.2.826.0.1.3680043.8.498.{7000 + patient}"
    ds.PatientName = f"{last}^{first}"
    ds.PatientID = pid
    ds.AccessionNumber = acc
    ds.PatientBirthDate = f"19{50 + patient:02d}0{1 + patient % 9}1{patient % 9}"
    ds.InstitutionName = f"{last} MEMORIAL HOSPITAL"
    ds.InstitutionAddress = f"{12 + patient} {first} Street, Springfield"
    ds.ReferringPhysicianName = f"DR{LAST[(patient + 3) % len(LAST)]}^ALOYSIUS"
    ds.PatientTelephoneNumbers = f"555-01{patient:02d}-77"
    ds.OtherPatientIDs = f"OTH{patient:06d}"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = f"2021{1 + patient % 12:02d}{10 + idx % 18}"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = f"{study}.{idx % 3 + 1}"
    ds.SOPInstanceUID = f"{study}.{idx % 3 + 1}.{idx}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = 100000 + idx  # the score's link between input and output (kept by all)
    ds.ImageComments = f"Seen by {first} {last} ({pid}) on 03/0{1 + patient % 9}/2021"
    ds.AdditionalPatientHistory = f"Patient {last} referred, MRN {pid}"
    ds.ReferencedImageSequence = Sequence([_item(
        ReferencedSOPClassUID=str(ds.SOPClassUID), ReferencedSOPInstanceUID=f"{study}.1.98")])
    ds.RequestAttributesSequence = Sequence([_item(
        RequestedProcedureID=f"RP{patient:05d}X", ScheduledProcedureStepID=f"SPS{idx:05d}",
        ReferencedStudySequence=Sequence([_item(
            ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1",
            ReferencedSOPInstanceUID=f"{study}.99")]))])
    ds.OtherPatientIDsSequence = Sequence([_item(PatientID=f"ALT{patient:06d}",
                                                 TypeOfPatientID="TEXT")])
    blk = ds.private_block(0x0019, "SCORE PRIVATE", create=True)
    blk.add_new(0x01, "PN", f"{last}^{first}")
    blk.add_new(0x02, "LO", pid)
    blk.add_new(0x03, "LT", f"{first} {last} follow-up")
    key = {
        "PatientName": ("header", "replace-or-remove", f"{last}"),
        "PatientID": ("header", "replace", pid),
        "AccessionNumber": ("header", "replace-or-remove", acc),
        "PatientBirthDate": ("dates", "shift-or-remove", str(ds.PatientBirthDate)),
        "InstitutionName": ("header", "replace-or-remove", f"{last} MEMORIAL"),
        "InstitutionAddress": ("header", "replace-or-remove", f"{first} Street"),
        "ReferringPhysicianName": ("header", "replace-or-remove", LAST[(patient + 3) % len(LAST)]),
        "PatientTelephoneNumbers": ("header", "replace-or-remove", f"555-01{patient:02d}"),
        "OtherPatientIDs": ("header", "replace-or-remove", f"OTH{patient:06d}"),
        "StudyDate": ("dates", "shift-or-remove", str(ds.StudyDate)),
        "ContentDate": ("dates", "shift-or-remove", str(ds.StudyDate)),
        "StudyInstanceUID": ("uids", "remap-uid", study),
        "SOPInstanceUID": ("uids", "remap-uid", str(ds.SOPInstanceUID)),
        "ImageComments": ("free-text", "replace-or-remove", last),
        "ImageComments/id": ("free-text", "replace-or-remove", pid),
        "AdditionalPatientHistory": ("free-text", "replace-or-remove", last),
        "RequestedProcedureID": ("sequences", "replace-or-remove", f"RP{patient:05d}X"),
        "RequestAttributesSequence/uid": ("sequences", "replace-or-remove", f"{study}.99"),
        "ReferencedImageSequence": ("sequences", "remap-uid", f"{study}.1.98"),
        "OtherPatientIDsSequence": ("sequences", "replace-or-remove", f"ALT{patient:06d}"),
        "private:name": ("private", "replace-or-remove", f"{last}^{first}"),
        "private:id": ("private", "replace-or-remove", pid),
        "private:text": ("private", "replace-or-remove", f"{first} {last}"),
        "Modality": ("keep", "keep", str(ds.get("Modality", ""))),
        "Rows": ("keep", "keep", str(ds.get("Rows", ""))),
        "PixelSpacing": ("keep", "keep", str(ds.get("PixelSpacing", ""))),
    }
    if modality in ("US", "SC"):
        _render(ds, [f"{last} {first}", f"ID {pid}", f"{ds.StudyDate[6:]}.{ds.StudyDate[4:6]}."
                     f"{ds.StudyDate[:4]}"])
        key["pixels"] = ("pixels", "redact-pixels", "")
    elif "PixelData" in ds:
        key["pixels:keep"] = ("keep", "keep", "")
    return key


def build(folder: Path, copies: int) -> dict[int, tuple[dict, dict]]:
    """Write the corpus; return InstanceNumber -> (answer key, reference values)."""
    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file

    folder.mkdir(parents=True)
    answers = {}
    idx = 0
    for base, modality in BASES:
        for c in range(copies):
            ds = pydicom.dcmread(get_testdata_file(base))
            patient = (idx // 3) % 8
            key = plant(ds, idx, patient, modality)
            ref = {"study": str(ds.StudyInstanceUID), "patient": patient}
            if "PixelData" in ds:
                arr = ds.pixel_array
                ref["pixels"] = arr.copy()
                ref["text_mask"] = None
                if "pixels" in key:  # planted text pixels: where rendering changed the image
                    orig = pydicom.dcmread(get_testdata_file(base)).pixel_array
                    diff = arr != orig
                    ref["text_mask"] = diff.any(axis=-1) if diff.ndim == arr.ndim and \
                        arr.ndim == 3 and arr.shape[-1] == 3 else diff
            ds.save_as(folder / f"{base[:-4]}_{c:02d}.dcm", enforce_file_format=True)
            answers[100000 + idx] = (key, ref)
            idx += 1
    del np
    return answers


def _texts(ds) -> str:
    out = []
    for el in ds.iterall():
        if el.VR in ("SQ", "OB", "OW", "UN", "OF", "OD", "OL", "OV"):
            continue
        out.append(str(el.value))
    return "\n".join(out).upper()


def _value(ds, name: str):
    if name == "ReferencedImageSequence":
        for it in ds.get("ReferencedImageSequence", []) or []:
            return it.get("ReferencedSOPInstanceUID")
        return None
    return ds.get(name.split("/")[0])


def score_file(ds, key: dict, ref: dict, maps: dict) -> Counter:
    """Counter of (category, correct 0/1) for one output."""
    import numpy as np

    res = Counter()
    texts = _texts(ds)
    for name, (cat, action, value) in key.items():
        ok = False
        if action == "replace-or-remove":
            ok = value.upper() not in texts
        elif action == "replace":
            v = ds.get(name)
            ok = bool(v) and str(v) != value and value.upper() not in texts
            if ok:  # consistent: one pseudonym per patient
                ok = maps.setdefault(("pid", ref["patient"]), str(v)) == str(v)
        elif action == "shift-or-remove":
            v = ds.get(name)
            ok = (not v or str(v) != value) and value not in texts
        elif action == "remap-uid":
            v = _value(ds, name)
            ok = v is not None and str(v) != value and value not in texts
            if ok and name == "StudyInstanceUID":
                ok = maps.setdefault(("study", ref["study"]), str(v)) == str(v)
        elif action == "keep":
            if name == "pixels:keep":
                try:
                    ok = np.array_equal(ds.pixel_array, ref["pixels"])
                except Exception:
                    ok = False
            else:
                ok = str(ds.get(name, "")) == value
        elif action == "redact-pixels":
            try:
                arr = ds.pixel_array
                mask = ref["text_mask"]
                changed = arr != ref["pixels"]
                if changed.ndim == 3 and arr.ndim == 3 and arr.shape[-1] == 3:
                    changed = changed.any(axis=-1)
                ok = mask is not None and changed[mask].mean() >= 0.95
                # and the rest of the image kept (not blanked whole)
                ok = ok and (~changed[~mask]).mean() >= 0.9
                res[("keep", int((~changed[~mask]).mean() >= 0.9))] += 1
            except Exception:
                ok = False
        res[(cat, int(ok))] += 1
    return res


def run_tool(name: str, src: Path, out: Path, env: dict, keyf: Path) -> int:
    py = sys.executable
    if name == "medgen":
        cmd = [py, "-m", "medgen", "deid", str(src), str(out), "--key-file", str(keyf),
               "--option", "retain-long-modified-dates"]
    elif name == "dicognito":
        cmd = [py, "-m", "dicognito", "--quiet", "--output-directory", str(out), str(src)]
    else:
        cmd = [py, "-c", "import sys; from dicomanonymizer.anonymizer import main; "
               "sys.exit(main())", str(src), str(out)]
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.run(cmd, env=env, capture_output=True, timeout=3600).returncode


def evaluate(out: Path, answers: dict) -> tuple[Counter, int]:
    import pydicom

    total, maps, seen = Counter(), {}, set()
    for p in sorted(out.rglob("*")):
        if not p.is_file() or "_deid" in p.parts:
            continue
        try:
            ds = pydicom.dcmread(p)
            inst = int(ds.get("InstanceNumber", 0) or 0)
        except Exception:
            continue
        if inst in answers and inst not in seen:
            seen.add(inst)
            key, ref = answers[inst]
            total.update(score_file(ds, key, ref, maps))
    for inst, (key, _ref) in answers.items():
        if inst not in seen:  # not output: none of its actions done
            for cat, _a, _v in key.values():
                total[(cat, 0)] += 1
    return total, len(seen)


def report(name: str, total: Counter, kept: int, n: int) -> None:
    cats = sorted({c for c, _ in total})
    ok = sum(v for (c, o), v in total.items() if o)
    req = sum(total.values())
    per = "  ".join(f"{c} {total[(c, 1)]}/{total[(c, 1)] + total[(c, 0)]}" for c in cats)
    print(f"{name:18s} {100 * ok / req:7.2f}%  ({ok}/{req})  files kept {kept}/{n} "
          f"({100 * kept / n:.1f}%)\n    {per}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=6)
    ap.add_argument("--benchlibs", default=os.environ.get("MEDGEN_BENCHLIBS", "/tmp/benchlibs"))
    ap.add_argument("--tools", default="medgen,dicognito,dicom-anonymizer")
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="deid-score-"))
    try:
        src = tmp / "in"
        answers = build(src, a.copies)
        n = len(answers)
        req = sum(len(k) for k, _ in answers.values())
        print(f"# corpus: {n} files from {len(BASES)} real test files, {req} required actions "
              "(including one pixel-keep per redacted image)")
        from medgen.keys import create_key_file

        keyf = tmp / "k.key"
        create_key_file(keyf)
        base_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        menv = {**base_env, **({"PYTHONPATH": os.environ["PYTHONPATH"]}
                               if "PYTHONPATH" in os.environ else {})}
        benv = {**base_env, "PYTHONPATH": a.benchlibs}
        print(f"{'tool':18s} {'score':>8s}")
        for tool in a.tools.split(","):
            out = tmp / f"out_{tool}"
            rc = run_tool(tool, src, out, menv if tool == "medgen" else benv, keyf)
            total, kept = evaluate(out, answers)
            if not kept and rc not in (0, 3):
                print(f"{tool:18s} did not run (exit {rc}; not installed under --benchlibs?)")
                continue
            report(tool, total, kept, n)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
