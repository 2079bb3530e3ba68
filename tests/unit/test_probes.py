"""The probes' pure parts: the LR curve analysis and verdicts, the shifts and the measured
normalisation map, the rate setter's bookkeeping, the findings and the reference file."""
from __future__ import annotations

import json
import math

import pytest
import torch

from invariants.app.probes import lr as lrmod
from invariants.app.probes import render, shifts
from invariants.errors import UsageError


def sweep(lr_min=1e-6, lr_max=10.0, k=50, best=0.03, diverge=0.5):
    """A range-test curve: flat, falling around `best`, rising past `diverge`."""
    out = []
    for i in range(k):
        lr = lr_min * (lr_max / lr_min) ** (i / (k - 1))
        x = math.log10(lr / best)
        loss = 3.0 - 1.5 / (1 + math.exp(-3 * x))  # falls by 1.5, steepest at `best`
        if lr > diverge:
            loss += 10 * math.log10(lr / diverge)
        out.append((lr, loss))
    return out


def test_steepest_and_divergence_found():
    rep = lrmod.analyse(sweep(), configured=0.03)
    assert rep.lr_steepest == pytest.approx(0.03, rel=0.6)
    assert 0.3 < rep.lr_diverge < 1.5
    assert rep.verdict == "ok"
    lo, hi = rep.region
    assert lo < rep.lr_steepest < hi


@pytest.mark.parametrize("configured, verdict", [(5.0, "too_high"), (0.4, "too_high"), (0.03, "ok"),
                                                 (0.1, "ok"), (1e-5, "too_low")])
def test_verdicts(configured, verdict):
    assert lrmod.analyse(sweep(), configured).verdict == verdict


def test_too_few_points_or_no_descent_is_unknown():
    assert lrmod.analyse(sweep()[:3], 0.1).verdict == "unknown"
    flat = [(lr, 2.0 + 0.01 * (-1) ** i) for i, (lr, _) in enumerate(sweep())]
    rep = lrmod.analyse(flat, 0.1)
    assert rep.verdict == "unknown" and "did not fall" in rep.reason


def test_non_finite_loss_is_divergence():
    curve = sweep(diverge=100.0)[:40] + [(2.0, float("nan"))]
    rep = lrmod.analyse(curve, 0.01)
    assert rep.lr_diverge == 2.0


def test_centred_smoothing_has_no_lag():
    curve = [(10 ** (i / 10), float(i)) for i in range(30)]
    s = lrmod.smooth(curve)
    assert s[15] == pytest.approx(15.0)


def test_sweep_rates_are_geometric_and_end_at_max():
    p = lrmod.LRRangeProbe(11, 1e-4, 1.0)
    assert p.sweep_rate(0) == pytest.approx(1e-4)
    assert p.sweep_rate(5) == pytest.approx(1e-2)
    assert p.sweep_rate(10) == pytest.approx(1.0) == p.sweep_rate(50)


class _Session:
    def __init__(self, root):
        self.root, self.step, self.stopped = root, 0, None

    def request_stop(self, reason):
        self.stopped = reason


def test_rate_setter_keeps_group_ratios_and_pairs_losses():
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD([{"params": [model.weight], "lr": 0.01}, {"params": [model.bias], "lr": 0.05}])
    setter = lrmod.RateSetter(lambda k: 1.0 * (k + 1))
    session = _Session(model)
    setter.session = session
    for k in range(3):
        loss = model(torch.ones(1, 2)).sum() * 0 + float(k)
        setter.on_loss(session, "mse_loss", (None, None), loss)
        setter._pre_step(opt, (opt,), {})
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.2 * (k + 1), 1.0 * (k + 1)])
        setter._post_step(opt, (opt,), {})
    assert setter.configured == [0.01, 0.05] and setter.configured_top == 0.05
    # the loss measured after update j is paired with update j's rate (the first loss, before
    # any update, with none)
    assert setter.curve() == [(1.0, 1.0), (2.0, 2.0)]


def test_diverging_sweep_requests_a_stop():
    p = lrmod.LRRangeProbe(20, 1e-3, 1.0)
    session = _Session(torch.nn.Linear(1, 1))
    p.session = session
    p.rates = [p.sweep_rate(i) for i in range(10)]
    for loss in (2.0, 1.5, 1.0, 0.8, 0.7, 5.0, 50.0, 80.0):
        p.losses.append(loss)
        p.after_point(loss)
    assert session.stopped and "4x its minimum" in session.stopped


def test_shift_parsing():
    assert shifts.parse(["brightness=0.5,1.5", "noise=0.1"]) == [("brightness", 0.5), ("brightness", 1.5),
                                                                 ("noise", 0.1)]
    for bad in ("blur=1", "brightness", "brightness=x", "contrast=-1", "noise=nan"):
        with pytest.raises(UsageError):
            shifts.parse([bad])


def test_shifts_in_the_original_scale_are_clamped():
    x = torch.full((2, 3, 4, 4), 0.8)
    g = torch.Generator().manual_seed(0)
    assert shifts.apply("brightness", 1.5, x, 0.0, 1.0, g).max() == 1.0
    assert shifts.apply("brightness", 0.5, x, 0.0, 1.0, g).mean() == pytest.approx(0.4)
    y = torch.rand(2, 3, 4, 4, generator=g)
    c = shifts.apply("contrast", 0.0, y, 0.0, 1.0, g)
    assert torch.allclose(c[0], y[0].mean().expand_as(c[0]))
    n = shifts.apply("noise", 0.1, torch.full((64, 3, 8, 8), 0.5), 0.0, 1.0, g)
    assert float(n.std()) == pytest.approx(0.1, rel=0.1)


def test_measured_map_undoes_a_per_channel_normalisation():
    g = torch.Generator().manual_seed(1)
    raw = torch.rand(100, 3, 5, 5, generator=g)
    mean, std = torch.tensor([0.5, 0.4, 0.3])[:, None, None], torch.tensor([0.2, 0.25, 0.3])[:, None, None]
    m = shifts.measure_map(raw, (raw - mean) / std)
    assert "measured normalisation" in m.note
    assert torch.allclose(m.to_original((raw - mean) / std), raw, atol=1e-4)
    assert "as they are" in shifts.measure_map(raw, raw.clone()).note
    assert "not shaped like" in shifts.measure_map(raw[:, :, :4], raw).note
    assert "not a per-channel affine" in shifts.measure_map(raw, raw ** 3).note
    assert "could not be read" in shifts.measure_map(None, raw).note


def result(drop=0.05, dead=0.0, alike=True):
    return {"metric": "accuracy", "baseline": {"accuracy": 0.9, "per_class": {"0": 0.9, "1": 0.9}},
            "shifts": [{"name": "brightness", "value": 0.5, "accuracy": 0.9 - drop, "drop": drop}],
            "dead_units": {"fc.1": {"dead_fraction": dead, "units": 10}},
            "normalisation": {"mean_shift": 0.1 if alike else 3.0, "std_ratio": 1.0, "mean_shift_limit": 0.5,
                              "normalised_alike": alike}}


def test_findings():
    assert render.findings(result(), 0.1, None) == []
    assert "brightness=0.5" in render.findings(result(drop=0.3), 0.1, None)[0]
    assert "not normalised" in render.findings(result(alike=False), 0.1, None)[0]
    assert "dead" in render.findings(result(dead=0.9), 0.1, None)[0]
    ref = {"dead_units": {"fc.1": 0.8}, "baseline": {"per_class": {"0": 0.9, "1": 1.0}}, "margin": 0.25}
    assert render.findings(result(dead=0.9), 0.1, ref) == []  # as dead as the reference
    below = render.findings(result(), 0.05, ref)
    assert below == ["class 1: accuracy 0.90, the reference's 1.00"]


def test_reference_from_a_probe_report(tmp_path):
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(result(dead=0.1)))
    ref = render.load_reference(str(path))
    assert ref["dead_units"] == {"fc.1": 0.1} and ref["source"] == "probe report"
    with pytest.raises(UsageError):
        render.load_reference(str(tmp_path / "missing.json"))


def test_text_reports_read_at_a_glance():
    rep = lrmod.analyse(sweep(), configured=5.0).to_json()
    text = render.lr_text("train.py", rep, [0.5, 5.0], 50)
    assert "ACTIVE PROBE" in text and "verdict: too_high" in text and "largest of 2 groups" in text
    text = render.robustness_text("train.py", result(drop=0.3), render.findings(result(drop=0.3), 0.1, None), 0.1)
    assert "FAIL" in text and text.rstrip().endswith("verdict: fail")
    assert render.exit_for_lr("ok") == 0 and render.exit_for_lr("too_low") == 1 and render.exit_for_lr("unknown") == 7


def test_reference_from_an_invariant_file(tmp_path):
    from invariants import invfile
    from invariants.model import Invariant, InvariantSet, Support, When
    inv = Invariant(id="range:act.fc.1.dead_fraction@train", template="range", target=("act.fc.1.dead_fraction",),
                    expect={"min": 0.0, "max": 0.25}, when=When("train", (0, None)), severity="error",
                    status="accepted", support=Support(0, 0, None), why="")
    path = tmp_path / "inv.yaml"
    invfile.dump(InvariantSet(schema=1, invariants=(inv,)), str(path), "yaml")
    ref = render.load_reference(str(path))
    assert ref["dead_units"] == {"fc.1": 0.25} and ref["margin"] == 0.0
    assert render.findings(result(dead=0.3), 0.1, ref) == ["fc.1: 30% of its units are dead, the reference's 25%"]
