"""memorization check: near-copies of training scans are flagged (and withheld), distinct real
scans are not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medgen.manifest import Manifest
from medgen.models import IntensityNorm
from medgen.synth.data import load_reference, prepare
from medgen.synth.memorization import check_memorization

from .conftest import class_phantom

NORM = IntensityNorm(mode="range", a_min=0, a_max=1000, clip=True)


@pytest.fixture(scope="module")
def real_sets(class_manifest):
    m = Manifest.load(class_manifest)
    train, train_ids, _ = load_reference(m, m.split("train"), NORM, [16] * 3, 3)
    held, held_ids, _ = load_reference(m, [r for r in m if r.split in ("val", "test")], NORM,
                                       [16] * 3, 3)
    return train, train_ids, held, held_ids


def _phantom(cls, seed):
    x = torch.as_tensor(class_phantom(cls, seed))[None]
    return prepare({"image": x}, [16] * 3, 3)[0].numpy()


def test_copies_are_flagged_distinct_scans_are_not(real_sets):
    train, train_ids, held, held_ids = real_sets
    rng = np.random.default_rng(0)
    copies = [t + 0.01 * rng.standard_normal(t.shape).astype(np.float32) for t in train]
    # distinct real scans: phantoms of both classes from seeds the training set never used
    distinct = [_phantom("left" if i % 2 else "right", 500 + i) for i in range(8)]
    res = check_memorization(copies + distinct, train, held, train_ids=train_ids,
                             heldout_ids=held_ids)
    flags = [r["flagged"] for r in res.rows]
    assert all(flags[:len(copies)]), res.rows[:len(copies)]
    assert not any(flags[len(copies):]), res.rows[len(copies):]
    nearest = [r["nearest_train_ncc"] for r in res.rows[:len(copies)]]
    assert nearest == train_ids  # each copy points at the scan it copies
    s = res.summary()
    assert s["n_flagged"] == len(copies) and s["calibration"]["source"] == "heldout"
    assert s["thresholds"]["ncc"] > 0 and s["thresholds"]["embedding"] > 0


def test_leave_one_out_calibration_without_heldout(real_sets):
    train, train_ids, _, _ = real_sets
    res = check_memorization([train[0] + 0.001], train, None, train_ids=train_ids)
    assert res.calibration["source"] == "train-leave-one-out" and res.rows[0]["flagged"]


class CopyGenerator(torch.nn.Module):
    """A deliberately overfit 'generator': returns training scans plus tiny noise."""

    def __init__(self, config, train):
        super().__init__()
        self.config = config
        self.register_buffer("bank", torch.as_tensor(np.stack(train))[:, None])
        self.w = torch.nn.Parameter(torch.zeros(1))

    def image_size(self):
        return list(self.config.image_size)

    def generate(self, seeds, cond=None, **kw):
        out = []
        for s in seeds:
            g = torch.Generator().manual_seed(int(s) % 2**63)
            i = int(torch.randint(0, len(self.bank), (1,), generator=g))
            out.append(self.bank[i] + 0.01 * torch.randn(self.bank[i].shape, generator=g))
        return torch.stack(out)

    def split_output(self, y):
        return y, None


def test_overfit_generator_is_withheld_unless_kept(trained_vae, class_manifest, real_sets,
                                                    tmp_path):
    from medgen.models import load_card, parse_model_config
    from medgen.synth.sampling import synthesize

    card = load_card(trained_vae.last)
    cfg = parse_model_config(__import__("json").loads((trained_vae.last / "config.json").read_text()))
    gen = CopyGenerator(cfg, real_sets[0])
    res = synthesize((gen, card), 4, tmp_path / "a", conditions=["side=left"],
                     train_manifest=class_manifest, tracking=False)
    assert res.n_flagged == 4 and res.n_withheld == 4 and res.n_written == 0
    assert res.memorization["rate"] == 1.0
    assert not list((tmp_path / "a" / "samples").iterdir())
    kept = synthesize((gen, card), 4, tmp_path / "b", conditions=["side=left"],
                      train_manifest=class_manifest, tracking=False, keep_flagged=True)
    assert kept.n_written == 4 and kept.n_withheld == 0
    m = Manifest.load(kept.manifest)
    assert all(r.extra["memorization"]["flagged"] for r in m)
    assert m.summary["synthetic"]["memorization"]["rate"] == 1.0
