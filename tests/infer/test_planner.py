"""The planner is a pure function of the predictor's probes: no torch, no model, no machine."""

from __future__ import annotations

import math

from medgen.infer.planner import Plan, Probe, apply_cap, best_window, n_windows, plan, step_down

GIB = 2**30
CPU = {"roi_size": None, "overlap": 0.25, "sw_batch_size": None, "window_memory_gb": 4.0,
       "memory_fraction": 0.8}


def _computed(shape, roi, overlap=0.25):
    return n_windows(shape, roi, overlap) * math.prod(roi)


def test_cpu_takes_the_whole_volume_when_it_fits():
    """The issue-20 case: a 1.8 Mvox volume with a 64^3 card window took 3.1x as long as one
    whole-volume window; the default is now that window."""
    p = Probe("cpu", (64, 64, 64), divisor=8, bytes_per_voxel=217.0)
    got = plan((152, 150, 81), p, **CPU)
    assert got.roi == (152, 150, 81) and got.sw_batch_size == 1 and got.device == "cpu"
    assert n_windows((152, 150, 81), (64, 64, 64), 0.25) == 18  # what the card window costs
    assert _computed((152, 150, 81), (64, 64, 64)) / math.prod((152, 150, 81)) > 2.5


def test_cpu_tiles_a_ct_volume_within_the_budget_with_the_fewest_computed_voxels():
    p = Probe("cpu", (64, 64, 64), divisor=8, bytes_per_voxel=217.0)
    shape = (512, 512, 300)
    got = plan(shape, p, **CPU)
    assert math.prod(got.roi) * 217.0 <= 4 * GIB
    # no window from a brute-force search of multiples of 8 within the budget computes fewer
    best = min(_computed(shape, (a, b, c)) for a in (256, 384, 512) for b in (256, 384, 512)
               for c in range(64, 301, 8) if a * b * c * 217.0 <= 4 * GIB)
    assert _computed(shape, got.roi) <= best
    assert _computed(shape, got.roi) / math.prod(shape) < 1.35
    # at least the model's own window on every axis, and a smaller budget gives smaller windows
    assert all(r >= 64 for r in got.roi)
    small = plan(shape, p, **{**CPU, "window_memory_gb": 0.5})
    assert math.prod(small.roi) < math.prod(got.roi) and math.prod(small.roi) * 217 <= 0.5 * GIB


def test_cpu_plan_depends_on_nothing_of_the_machine():
    """Same probe figures, same window, whatever the free memory: every node (and engine) writes
    the same bytes. A fixed --roi wins; a slice-wise model stays one slice deep."""
    p = Probe("cpu", (64, 64, 64), divisor=8, bytes_per_voxel=217.0, free_bytes=123)
    q = Probe("cpu", (64, 64, 64), divisor=8, bytes_per_voxel=217.0, free_bytes=10**12)
    assert plan((300, 280, 200), p, **CPU) == plan((300, 280, 200), q, **CPU)
    fixed = plan((300, 280, 200), p, **{**CPU, "roi_size": (96, 96, 500)})
    assert fixed.roi == (96, 96, 200) and fixed.reason == "cpu: --roi"
    two_d = Probe("cpu", (256, 256, 1), divisor=8, bytes_per_voxel=300.0)
    assert plan((512, 512, 300), two_d, **CPU).roi == (512, 512, 1)
    assert best_window((10, 10, 10), (64, 64, 64), 1.0, 8, 0.25) == (10, 10, 10)  # nothing fits


def test_cuda_arithmetic_with_measured_numbers():
    """Planning from (free memory, bytes/voxel) as a GPU would measure them."""
    p = Probe("cuda:0", (64, 64, 64), divisor=8, bytes_per_voxel=2048.0, free_bytes=20 * GIB)
    got = plan((300, 300, 200), p, **CPU)
    stitch = 4 * 300 * 300 * 200 * 3
    budget = 0.8 * 20 * GIB - stitch
    assert got.device == "cuda:0" and got.sw_device == "cuda:0"
    assert 2048 * math.prod(got.roi) <= budget < 2048 * 300 * 300 * 200  # whole would not fit
    assert got.sw_batch_size == max(1, min(32, int(budget // (2048 * math.prod(got.roi))),
                                           n_windows((300, 300, 200), got.roi, 0.25)))
    # little memory: stitching moves to the CPU for a huge volume, the window shrinks to fit
    small = Probe("cuda:0", (64, 64, 64), divisor=8, bytes_per_voxel=2048.0, free_bytes=3 * GIB)
    got2 = plan((1024, 1024, 600), small, **CPU)
    assert got2.device == "cpu" and got2.sw_device == "cuda:0"
    assert 2048 * math.prod(got2.roi) <= 0.8 * 3 * GIB
    # the whole volume when it fits
    big = Probe("cuda:0", (64, 64, 64), divisor=8, bytes_per_voxel=2048.0, free_bytes=140 * GIB)
    assert plan((182, 218, 182), big, **CPU).roi == (182, 218, 182)


def test_step_down_ladder_and_cap():
    p = Plan((64, 64, 64), 4, "cuda:0", "cuda:0")
    seq = []
    while p is not None:
        seq.append((p.roi[0], p.sw_batch_size, p.device))
        p = step_down(p, 8)
    assert seq == [(64, 4, "cuda:0"), (64, 2, "cuda:0"), (64, 1, "cuda:0"), (32, 1, "cuda:0"),
                   (16, 1, "cuda:0"), (16, 1, "cpu")]
    capped = apply_cap(Plan((128, 128, 128), 8, "cuda:0", "cuda:0"), Plan((64, 64, 64), 2, "cuda:0", "cpu"))
    assert capped.roi == (64, 64, 64) and capped.sw_batch_size == 2 and capped.device == "cpu"


def test_the_planner_imports_no_torch():
    import ast
    from pathlib import Path

    import medgen.infer.planner as planner

    tree = ast.parse(Path(planner.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(m.split(".")[0] in ("torch", "monai") or m.startswith("medgen.infer.predictor")
                   for m in names), names
