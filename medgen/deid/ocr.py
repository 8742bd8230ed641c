"""Offline OCR for burned-in text: Tesseract (Debian ``tesseract-ocr``), driven through its CLI.

Why Tesseract and not RapidOCR (both offline; measured by ``bench/deid_ocr_bench.py``, see
docs/deid.md): on rendered annotations over real ultrasound images Tesseract found as many of the
planted identifier words, ships as one Debian package (no 100 MB of onnxruntime + OpenCV wheels in
medgen's dependencies) and its English model reads Latin text; RapidOCR's wheel ships a Chinese
PP-OCR recogniser. Why the CLI rather than pytesseract: pytesseract writes each image to a
temporary file - pixel data with burned-in identifiers would land in ``/tmp``. Here the image goes
to the process's stdin as PNG and the words come back on stdout (TSV); nothing touches the disk.

Images are prepared once per frame: grey, inverted when text is light on dark (ultrasound), and
upscaled so that small overlay fonts reach the size Tesseract reads best.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np


class OcrUnavailable(RuntimeError):
    """No OCR engine on this machine (the caller quarantines at-risk files with this reason)."""


@dataclass(frozen=True)
class Word:
    """One recognised word: box in the original image's pixel coordinates, text, confidence 0-100
    (-1 when Tesseract found a text region but recognised nothing in it)."""

    x: int
    y: int
    w: int
    h: int
    text: str
    conf: float


@functools.cache
def tesseract_path() -> str | None:
    return shutil.which("tesseract")


@functools.cache
def engine_version() -> str:
    """``tesseract 5.3.0`` (recorded in DeidentificationMethod), or raise OcrUnavailable."""
    exe = tesseract_path()
    if exe is None:
        raise OcrUnavailable("OCR engine not installed (Debian package tesseract-ocr)")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    first = (out.stdout or out.stderr).splitlines()[0:1]
    return first[0].strip() if first else "tesseract"


def prepare(frame: np.ndarray) -> tuple[np.ndarray, float]:
    """Grey uint8, dark text on light background, upscaled; returns (image, scale)."""
    a = np.asarray(frame)
    if a.ndim == 3:  # RGB: the darkest channel keeps white/grey text, drops colour flow maps
        a = a[..., :3].min(axis=-1)
    a = a.astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.full(a.shape, 255, np.uint8), 1.0
    g = ((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    if g.mean() < 128:  # light text on a dark image: invert for Tesseract
        g = 255 - g
    scale = 2.0 if max(g.shape) <= 1200 else 1.0
    if scale != 1.0:
        from PIL import Image

        g = np.asarray(Image.fromarray(g).resize((int(g.shape[1] * scale), int(g.shape[0] * scale)),
                                                 Image.BICUBIC))
    return g, scale


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def parse_tsv(tsv: str, scale: float) -> list[Word]:
    """Words (level 5 rows) of Tesseract's TSV output, boxes scaled back to the original image."""
    words = []
    for line in tsv.splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) < 12 or parts[0] != "5":
            continue
        x, y, w, h = (int(v) for v in parts[6:10])
        try:
            conf = float(parts[10])
        except ValueError:
            conf = -1.0
        s = 1.0 / scale
        words.append(Word(int(x * s), int(y * s), max(1, int(round(w * s))),
                          max(1, int(round(h * s))), parts[11].strip(), conf))
    return words


def _run(img: np.ndarray, scale: float, psm: str, timeout: float) -> list[Word]:
    exe = tesseract_path()
    if exe is None:
        raise OcrUnavailable("OCR engine not installed (Debian package tesseract-ocr)")
    proc = subprocess.run([exe, "stdin", "stdout", "--psm", psm, "-l", "eng", "tsv"],
                          input=_png(img), capture_output=True, timeout=timeout,
                          env={"OMP_THREAD_LIMIT": "1", "PATH": "/usr/bin:/bin"})
    if proc.returncode != 0:
        raise OcrUnavailable(f"OCR engine failed (exit {proc.returncode})")
    return parse_tsv(proc.stdout.decode("utf-8", "replace"), scale)


def bright_mask(frame: np.ndarray) -> np.ndarray | None:
    """Scanner annotations are drawn in the brightest grey/white: keep only pixels above 70% of
    the range in every channel (black text on white for Tesseract); None for flat images."""
    a = np.asarray(frame)
    if a.ndim == 3:
        a = a[..., :3].min(axis=-1)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return None
    b = np.where(a >= lo + 0.7 * (hi - lo), 0, 255).astype(np.uint8)
    from PIL import Image

    return np.asarray(Image.fromarray(b).resize((b.shape[1] * 2, b.shape[0] * 2), Image.NEAREST))


def read_words(frame: np.ndarray, timeout: float = 60.0) -> list[Word]:
    """Every word Tesseract finds in one frame (sparse-text page segmentation, ``--psm 11``), in
    two readings: the frame in grey (dark or light text anywhere) and its brightest pixels
    alone (white annotations over busy image content, e.g. colour Doppler)."""
    img, scale = prepare(frame)
    words = _run(img, scale, "11", timeout)
    mask = bright_mask(frame)
    if mask is not None:
        words += _run(mask, 2.0, "11", timeout)
    return words


def read_line(crop: np.ndarray, timeout: float = 30.0) -> list[Word]:
    """The words of one small crop read as a single text line (``--psm 7``), at twice the
    frame's preparation scale; boxes relative to the crop."""
    if crop.size == 0:
        return []
    img, scale = prepare(crop)
    from PIL import Image

    img = np.asarray(Image.fromarray(img).resize((img.shape[1] * 2, img.shape[0] * 2),
                                                 Image.BICUBIC))
    return _run(img, scale * 2, "7", timeout)
