import os

import pytest

from medgen.errors import UnsafePathError
from medgen.utils.paths import check_relative, is_inside, output_path, resolve_inside


@pytest.mark.parametrize("rel", ["../x.nii.gz", "a/../../x", "/etc/passwd", "C:\\x", "\\\\srv\\x",
                                 "a\\..\\x", "a/\x00b", "", "//host/x"])
def test_untrusted_relative_paths_are_refused(rel):
    with pytest.raises(UnsafePathError):
        check_relative(rel, what="record r1")


def test_symlink_out_of_root_is_refused(tmp_path):
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(UnsafePathError):
        resolve_inside(root, "link/x.nii.gz")
    assert resolve_inside(root, "a/b.nii.gz") == root / "a" / "b.nii.gz"
    assert is_inside(root / "a", root) and not is_inside(outside, root)


def test_output_never_an_input(tmp_path):
    src = tmp_path / "in.nii.gz"
    src.write_bytes(b"x")
    dst = tmp_path
    with pytest.raises(UnsafePathError):
        output_path(dst, "in.nii.gz", inputs=[src])
    os.link(src, tmp_path / "hard.nii.gz")
    with pytest.raises(UnsafePathError):
        output_path(dst, "hard.nii.gz", inputs=[src])
    assert output_path(dst, "out/in.nii.gz", inputs=[src]) == dst / "out" / "in.nii.gz"
