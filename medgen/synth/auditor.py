"""The audit of synthesis runs (kind ``synthesize``), a plugin of :mod:`medgen.audit`. The seal
recipe it reads is written by :func:`medgen.synth.lineage.seal_synthesis`.

* The host re-hashes the synthetic set through its sealed manifest (role ``synthetic``: the
  manifest's digest, then every sample file's sha256).
* ``check``: every record of the synthetic manifest names this run and the sealed generator
  weights.
* ``rerun``: ``N`` written samples are regenerated from the same checkpoint, base seed, block size
  and sampling settings (the sampler's reproducibility contract: identical bytes) and compared
  file by file with the sealed manifest.
"""

from __future__ import annotations

from collections.abc import Iterator

from medgen.audit import AuditContext, Finding, fail, ok


class SynthesisAuditor:
    """Checks and re-runs of synthesis runs."""

    def check(self, ctx: AuditContext) -> Iterator[Finding]:
        m = ctx.manifests.get("synthetic")
        if m is None:
            return
        wsha = ctx.record.get("lineage", {}).get("weights_sha256")
        bad = [r.id for r in m if r.extra.get("synthesis_run") != ctx.run_id
               or r.extra.get("weights_sha256") != wsha]
        if bad:
            yield fail(f"{len(bad)} synthetic record(s) name another run or generator (e.g. {bad[0]})")
        else:
            yield ok(f"{len(m)} synthetic record(s) name this run and the sealed generator")

    def rerun(self, ctx: AuditContext, n: int) -> list[Finding]:
        from medgen.synth.sampling import synthesize

        rr = ctx.record.get("rerun", {})
        m = ctx.manifests.get("synthetic")
        model = ctx.path(rr.get("model"))
        if model is None or not model.exists():
            return [fail("synthesis re-run impossible: the generator is not found "
                         "(pass --data-root model=DIR)")]
        if m is None or not len(m):
            return [fail("synthesis re-run impossible: no synthetic samples to compare")]
        chosen = sorted(m, key=lambda r: int(r.extra["index"]))[: max(1, n)]
        out = ctx.workdir / "rerun-synth"
        synthesize(model, int(rr["n"]), out, indices=[int(r.extra["index"]) for r in chosen],
                   seed=int(rr["seed"]), batch=int(rr["batch"]), fmt=rr["format"],
                   conditions=rr.get("conditions") or None, sampler=rr.get("sampler"),
                   steps=rr.get("steps"), guidance=rr.get("guidance"), eta=rr.get("eta"),
                   device="cpu", amp="off", memorization=False, tracking=False)
        from medgen.utils.hashing import sha256_file

        found = []
        for r in chosen:
            same = all((out / f.path).is_file() and sha256_file(out / f.path) == f.sha256
                       for f in r.files)
            if not same and rr.get("device", "cpu") != "cpu":
                found.append(ok(f"sample {r.extra['index']}: re-generated on CPU; the run sampled "
                                f"on {rr['device']}, so bytes are not expected to match"))
                continue
            found.append((ok if same else fail)(
                f"sample {r.extra['index']}: re-generated "
                + ("bit-identical" if same else "output differs from the sealed manifest")))
        return found
