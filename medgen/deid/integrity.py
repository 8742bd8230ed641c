"""Is a DICOM file whole? Cheap structural checks, no pixel decoding.

pydicom reads a truncated file without complaint in most cases: it stops at the end of the file
and returns the elements it got, with a short last value (a pixel data element of 1,541 bytes
where the header says 32,768), or it warns about a missing delimiter. A de-identified copy of such
a file would be written with status ok although its pixels cannot be decoded. These checks find
that from the element lengths the file itself declares:

* the read ended with a warning about the end of the file (an undefined-length sequence or
  encapsulated pixel data without its delimiter);
* the last element's value is shorter than its declared length, or a few bytes of an element
  header are left over after it (the file was cut inside a header);
* native pixel data is shorter than Rows x Columns x Frames x Samples x BitsAllocated says;
* encapsulated pixel data has an item that runs past its end, fewer fragments than frames, or a
  last JPEG / JPEG-LS / JPEG 2000 fragment without its end-of-image marker (FFD9), or an RLE
  header whose segment offsets point past the fragment.

Each failure is one line naming where the file is cut, never a value.
"""

from __future__ import annotations

import struct

UNDEFINED = 0xFFFFFFFF
_EOF_WORDS = ("end of file", "eof", "no tag to read", "unpack requires")
JPEG_FAMILY = "1.2.840.10008.1.2.4."
RLE = "1.2.840.10008.1.2.5"
DEFLATED = "1.2.840.10008.1.2.1.99"


def eof_warning(messages: list[str]) -> str | None:
    for m in messages:
        low = m.lower()
        if any(w in low for w in _EOF_WORDS):
            return "truncated DICOM: the file ends inside a sequence or encapsulated pixel data"
    return None


def _where(tag: int) -> str:
    return "pixel data" if tag == 0x7FE00010 else "its header"


def check_extent(ds, size: int) -> str | None:
    """The last top-level element must end at the end of the file (deflated files excepted)."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and str(meta.get("TransferSyntaxUID", "")) == DEFLATED:
        return None
    last = None
    for tag in ds.keys():
        raw = ds.get_item(tag)
        vt = getattr(raw, "value_tell", None)
        if vt is not None and (last is None or vt > last.value_tell):
            last = raw
    if last is None or last.length == UNDEFINED or last.value is None:
        return None
    got = len(last.value)
    if got < last.length:
        return f"truncated DICOM: the file ends inside {_where(int(last.tag))} " \
               f"({got} of {last.length} bytes of the last element)"
    left = size - (last.value_tell + last.length)
    if 0 < left < 8:  # an element header needs 8 (or 12) bytes: a cut header is left over
        return "truncated DICOM: the file ends inside an element header"
    return None


def _native_expected(ds) -> int | None:
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except Exception:
        return None
    n = rows * cols * spp * max(frames, 1)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "YBR_FULL_422":
        n = n * 2 // 3
    return (n + 7) // 8 if bits == 1 else n * (bits // 8)


def _fragments(data: bytes, little: bool = True) -> list[tuple[int, int]] | str:
    """(offset, length) of each item after the basic offset table, or a reason."""
    fmt = "<HHI" if little else ">HHI"
    pos, items = 0, []
    while pos + 8 <= len(data):
        g, e, n = struct.unpack_from(fmt, data, pos)
        if (g, e) == (0xFFFE, 0xE0DD):
            break
        if (g, e) != (0xFFFE, 0xE000):
            return "encapsulated pixel data has a malformed item"
        if n == UNDEFINED or pos + 8 + n > len(data):
            return "the file ends inside an encapsulated pixel data fragment"
        items.append((pos + 8, n))
        pos += 8 + n
    return items[1:]  # item 0 is the basic offset table


def check_pixels(ds) -> str | None:
    """Native: enough bytes for every frame; encapsulated: fragments whole (see module doc)."""
    if "PixelData" not in ds:
        return None
    raw = ds.get_item("PixelData")
    data = raw.value if raw is not None else None
    if not isinstance(data, bytes | bytearray):
        return None
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if raw.length != UNDEFINED:  # native (uncompressed) pixel data
        need = _native_expected(ds)
        if need is not None and len(data) < need:
            return f"truncated DICOM: pixel data holds {len(data)} of the {need} bytes " \
                   "its header describes"
        return None
    frags = _fragments(bytes(data))
    if isinstance(frags, str):
        return f"truncated DICOM: {frags}"
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not frags or len(frags) < frames:
        return f"truncated DICOM: {len(frags)} pixel data fragment(s) for {frames} frame(s)"
    off, n = frags[-1]
    last = bytes(data[off: off + n])
    if ts.startswith(JPEG_FAMILY) and b"\xff\xd9" not in last[-4:]:
        return "truncated DICOM: the last pixel data fragment has no end-of-image marker"
    if ts == RLE and n >= 64:
        segs = struct.unpack_from("<16I", last, 0)
        if not 1 <= segs[0] <= 15 or any(o >= n for o in segs[1: 1 + segs[0]]):
            return "truncated DICOM: an RLE segment points past the end of its fragment"
    return None
