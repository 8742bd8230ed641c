"""Memory stays flat as the number of files grows (slow: generates and processes 400 files)."""

from __future__ import annotations

import subprocess
import sys

import pydicom
import pytest
from pydicom.data import get_testdata_file

SCRIPT = """
import resource, sys
from medgen.deid import deidentify
from medgen.keys import load_key
rep = deidentify(sys.argv[1], sys.argv[2], key=load_key(sys.argv[3]))
assert rep.ok == int(sys.argv[4]), rep.quarantined
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_peak_rss_flat_from_100_to_400_files(tmp_path, keyfile):
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    rss = {}
    for n in (100, 400):
        src = tmp_path / f"in{n}"
        src.mkdir()
        for i in range(n):
            ds = base.copy()
            ds.PatientID = f"P{i // 10}"
            ds.SOPInstanceUID = f"1.2.3.{n}.{i}"
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(src / f"{i}.dcm", enforce_file_format=True)
        out = subprocess.run([sys.executable, "-c", SCRIPT, str(src), str(tmp_path / f"o{n}"),
                              str(keyfile), str(n)], capture_output=True, text=True, check=True)
        rss[n] = int(out.stdout.strip().splitlines()[-1])
    assert rss[400] < rss[100] * 1.15, rss  # 4x the files, (almost) the same peak
