"""Which offline OCR engine for burned-in text: Tesseract (Debian) vs RapidOCR (ONNX wheel).

    python bench/deid_ocr_bench.py [--ocrlibs /tmp/ocrbench]

On real ultrasound images (pydicom's US1_UNCR, OBXXXX1A, gdcm-US-ALOKA-16) a patient name, an ID
and a date are rendered in white into the emptiest corner (as in bench/deid_score.py); each
engine reads the whole frame and the bench counts the planted tokens it recognised (one OCR
error allowed) and its time per image. RapidOCR is never a medgen dependency: install it only
for this bench, e.g.

    pip install --no-deps --target /tmp/ocrbench rapidocr-onnxruntime onnxruntime \
        opencv-python-headless pyclipper shapely pyyaml six
"""

from __future__ import annotations

import argparse
import sys
import time

FILES = ["US1_UNCR.dcm", "OBXXXX1A.dcm", "gdcm-US-ALOKA-16.dcm"]
TOKENS = ["HAVERSHAM", "ZEBEDEE", "PID0048213", "17.09.2021"]


def images():
    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file

    sys.path.insert(0, "bench")
    from deid_score import _render

    out = []
    for f in FILES:
        ds = pydicom.dcmread(get_testdata_file(f))
        _render(ds, [f"{TOKENS[0]} {TOKENS[1]}", f"ID {TOKENS[2]}", TOKENS[3]])
        arr = ds.pixel_array
        if str(ds.PhotometricInterpretation) == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            arr = apply_color_lut(arr, ds)
            if arr.dtype != np.uint8:
                arr = (arr / 257).astype(np.uint8)
        out.append((f, arr))
    return out


def found(texts: list[str]) -> int:
    from medgen.deid.burned_in import _close, _norm

    words = [_norm(t) for t in texts]
    n = 0
    for tok in TOKENS:
        t = _norm(tok)
        if any(t in w or _close(w, t) for w in words):
            n += 1
    return n


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ocrlibs", default="/tmp/ocrbench")
    a = ap.parse_args(argv)
    imgs = images()
    from medgen.deid import ocr

    rows = []
    t0 = time.perf_counter()
    hits = sum(found([w.text for w in ocr.read_words(arr)]) for _f, arr in imgs)
    rows.append((ocr.engine_version(), hits, (time.perf_counter() - t0) / len(imgs)))
    sys.path.insert(0, a.ocrlibs)
    try:
        from rapidocr_onnxruntime import RapidOCR

        eng = RapidOCR()
        t0 = time.perf_counter()
        hits = 0
        for _f, arr in imgs:
            res, _ = eng(arr)
            hits += found([r[1] for r in (res or [])])
        rows.append(("rapidocr-onnxruntime (PP-OCRv4 ch)", hits,
                     (time.perf_counter() - t0) / len(imgs)))
    except ImportError:
        rows.append(("rapidocr-onnxruntime", None, None))
    print(f"# {len(imgs)} real US images, {len(TOKENS)} planted tokens each, 1 thread")
    print(f"{'engine':36s} {'tokens found':>13s} {'s/image':>8s}")
    for name, hits, dt in rows:
        if hits is None:
            print(f"{name:36s} {'not installed':>22s}")
        else:
            print(f"{name:36s} {hits:>6d}/{len(TOKENS) * len(imgs):<6d} {dt:8.2f}")


if __name__ == "__main__":
    main()
