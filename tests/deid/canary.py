"""Canary corpus: real pydicom test files with identifiers planted everywhere a profile must reach.

Every planted value contains the marker ``CANARY`` (or a digit string / UID recorded in
``CANARY_VALUES``), so a survivor is found by a plain search of output bytes and decoded values.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

CANARY_VALUES = [
    "CANARYDOE", "CANARYJOHN", "CANARY-PID-7734155", "CANARYACC9981", "19610203", "20190411",
    "CANARY GENERAL HOSPITAL", "CANARY STREET 12", "CANARYREFDOC", "CANARY-STUDY-DESC",
    "CANARY-SERIES-DESC", "CANARY-IMAGE-COMMENT", "CANARY-PROTOCOL", "CANARY-OVERLAY-COMMENT",
    "CANARY-SR-TEXT", "CANARY-PRIVATE", "CANARY-PRIV-SEQ", "CANARY-DEEP3", "CANARYOTHERID",
    "CANARY-DERIVATION", "CANARY-STATION", "CANARY-OPERATOR", "555-0199-CANARY",
    "CANARY-ADDITIONAL-HISTORY", "CANARY-REQ-PROC", "CANARYBIRTHNAME",
]
# compact, case-folded forms also searched (e.g. "Canary Doe" written differently)
CANARY_MARKERS = ["canary", "7734155", "19610203", "20190411"]


def _item(**kw) -> Dataset:
    d = Dataset()
    for k, v in kw.items():
        setattr(d, k, v)
    return d


def plant(ds: Dataset, n: int) -> Dataset:
    """Plant identifiers at top level, 3 deep, in private tags/sequences, descriptors, overlay
    comments and SR-like text. ``n`` makes each file's UIDs distinct."""
    ds.PatientName = "CANARYDOE^CANARYJOHN"
    ds.PatientID = "CANARY-PID-7734155"
    ds.OtherPatientIDs = "CANARYOTHERID"
    ds.PatientBirthName = "CANARYBIRTHNAME^X"
    ds.AccessionNumber = "CANARYACC9981"
    ds.PatientBirthDate = "19610203"
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20190411"
    ds.StudyTime = "101500"
    ds.InstitutionName = "CANARY GENERAL HOSPITAL"
    ds.InstitutionAddress = "CANARY STREET 12"
    ds.ReferringPhysicianName = "CANARYREFDOC^A"
    ds.PatientTelephoneNumbers = "555-0199-CANARY"
    ds.StudyDescription = "CANARY-STUDY-DESC"
    ds.SeriesDescription = "CANARY-SERIES-DESC"
    ds.ImageComments = "CANARY-IMAGE-COMMENT for CANARYDOE"
    ds.ProtocolName = "CANARY-PROTOCOL"
    ds.DerivationDescription = "CANARY-DERIVATION"
    ds.StationName = "CANARY-STATION"
    ds.OperatorsName = "CANARY-OPERATOR"
    ds.AdditionalPatientHistory = "CANARY-ADDITIONAL-HISTORY"
    ds.RequestedProcedureDescription = "CANARY-REQ-PROC"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.2.1125.7734155.1"
    ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.2.1125.7734155.2.{n // 1000}"
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.2.1125.7734155.3.{n}"
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.2.1125.7734155.4"
    # three deep, in sequences the profile keeps (U) and ones it removes
    deep3 = _item(PatientName="CANARY-DEEP3^X", TextValue="CANARY-DEEP3 text",
                  ReferencedSOPInstanceUID="1.2.826.0.1.3680043.2.1125.7734155.9.3")
    deep2 = _item(ReferencedSOPClassUID=ds.SOPClassUID,
                  ReferencedSOPInstanceUID="1.2.826.0.1.3680043.2.1125.7734155.9.2",
                  ReferencedImageSequence=Sequence([deep3]), InstitutionName="CANARY-DEEP3 inst")
    deep1 = _item(ReferencedSOPClassUID=ds.SOPClassUID,
                  ReferencedSOPInstanceUID="1.2.826.0.1.3680043.2.1125.7734155.9.1",
                  SourceImageSequence=Sequence([deep2]), PatientID="CANARY-PID-7734155")
    ds.ReferencedImageSequence = Sequence([deep1])
    ds.RequestAttributesSequence = Sequence([_item(
        RequestedProcedureDescription="CANARY-REQ-PROC",
        ReferencedStudySequence=Sequence([_item(StudyComments="CANARY-DEEP3 comment")]))])
    # private tags and a private sequence (nested)
    blk = ds.private_block(0x0011, "CANARY CREATOR", create=True)
    blk.add_new(0x01, "LO", "CANARY-PRIVATE")
    blk.add_new(0x02, "PN", "CANARYDOE^CANARYJOHN")
    inner = _item(PatientName="CANARY-PRIV-SEQ^Y")
    iblk = inner.private_block(0x0013, "CANARY INNER", create=True)
    iblk.add_new(0x01, "LT", "CANARY-PRIV-SEQ deep private")
    blk.add_new(0x10, "SQ", Sequence([inner]))
    # overlay with comments
    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", b"\xff" * 8)
    ds.add_new(0x60004000, "LT", "CANARY-OVERLAY-COMMENT by CANARYDOE")
    # SR-style content
    ds.ContentSequence = Sequence([_item(
        RelationshipType="CONTAINS", ValueType="TEXT", TextValue="CANARY-SR-TEXT for CANARYDOE",
        ConceptNameCodeSequence=Sequence([_item(CodeValue="121071", CodingSchemeDesignator="DCM",
                                               CodeMeaning="Finding")]),
        ContentSequence=Sequence([_item(RelationshipType="HAS OBS CONTEXT", ValueType="PNAME",
                                        PersonName="CANARYREFDOC^A")]))])
    return ds


def make_corpus(folder: Path, n: int = 2) -> list[Path]:
    """Write ``n`` canary files (alternating CT_small / MR_small) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        base = "CT_small.dcm" if i % 2 == 0 else "MR_small.dcm"
        ds = pydicom.dcmread(get_testdata_file(base))
        plant(ds, i)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        p = folder / f"CANARYDOE_{i:03d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        out.append(p)
    return out


def survivors(root: Path) -> list[str]:
    """Every canary found in any output byte or decoded value under ``root`` (file names too)."""
    found = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        low_name = rel.lower()
        for m in CANARY_MARKERS:
            if m in low_name:
                found.append(f"{rel}: name holds {m}")
        if not p.is_file():
            continue
        data = p.read_bytes().lower()
        for m in CANARY_MARKERS:
            if m.encode() in data:
                found.append(f"{rel}: bytes hold {m}")
        if p.suffix == ".dcm":
            ds = pydicom.dcmread(p)
            for el in ds.iterall():
                s = str(el.value).lower()
                for m in CANARY_MARKERS:
                    if m in s.replace(" ", ""):
                        found.append(f"{rel}: {el.tag} holds {m}")
    return found
