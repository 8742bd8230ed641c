"""The transforms inside a real MONAI pipeline on a real NIfTI file (nibabel's anatomical.nii)."""

from __future__ import annotations

import json

import numpy as np
import torch

from medgen.transforms import EncodeRecordsd, NormalizeIntensityd, load_preset, replay


def test_load_normalise_degrade_batch_and_replay(nibabel_data):
    from monai.data import DataLoader, Dataset, MetaTensor
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    path = str(nibabel_data / "anatomical.nii")  # real T1 brain, 33x41x25 at 2 mm
    load = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image"),
                    NormalizeIntensityd("image", mode="percentile", lower=0.5, upper=99.5)])
    degrade = Compose([load_preset("mri-rician-mild", seed=0),
                       load_preset("thick-slice-x2", keys="noisy", source_key=None, seed=0)])
    pipe = Compose([load, degrade, EncodeRecordsd()])
    ds = Dataset([{"image": path}, {"image": path}], transform=pipe)

    s = ds[0]
    assert isinstance(s["noisy"], MetaTensor) and s["image"].shape == (1, 33, 41, 25)
    assert s["noisy"].shape == (1, 33, 41, 12)
    assert np.allclose(s["noisy"].pixdim.numpy(), [2.0, 2.0, 4.0], atol=1e-4)
    recs = json.loads(s["degradations"])
    assert [r["name"] for r in recs] == ["rician", "thick_slice"]
    assert 0.01 <= recs[0]["params"]["sigma"] <= 0.03
    # background (outside the head) gets the positive Rician bias before thick-slicing
    clean = load({"image": path})["image"]
    assert torch.equal(replay(recs, clean).as_tensor(), s["noisy"].as_tensor())
    only_noise = replay(recs[:1], clean)
    bg = clean.as_tensor() < 0.01
    assert float(only_noise.as_tensor()[bg].mean()) > float(clean.as_tensor()[bg].mean()) + 0.005

    batch = next(iter(DataLoader(ds, batch_size=2, num_workers=0)))
    assert batch["noisy"].shape == (2, 1, 33, 41, 12) and len(batch["degradations"]) == 2


def test_ct_pixel_size_taken_from_metatensor_affine():
    from monai.data import MetaTensor

    from medgen.transforms import RandDegradationd

    aff = torch.diag(torch.tensor([0.6, 0.6, 3.0, 1.0], dtype=torch.float64))
    ct = MetaTensor(torch.zeros(1, 32, 32, 2) - 1000, affine=aff)
    ct[:, 8:24, 8:24] = 0.0
    t = RandDegradationd("image", "ct_lowdose", params={"dose": 0.25, "n_angles": 60})
    s = t({"image": ct})
    assert s["degradations"][0]["params"]["pixel_mm"] == 0.6
    assert isinstance(s["image"], MetaTensor) and torch.equal(s["image"].affine, aff)
