"""`invar probe lr|robustness` on corpus cases and a small script: the acceptance of issue 16,
measured (docs/probes.md quotes the figures)."""
from __future__ import annotations

import json
import math
import sys

import pytest

from tests.conftest import ROOT, SCRIPTS, run_invar

RESNET = ROOT / "corpus" / "resnet_transfer"
BRIGHTNESS = SCRIPTS / "brightness_train.py"


def probe(kind, *args, store):
    res = run_invar("probe", kind, "--store", str(store), "--format", "json", *args)
    assert res.returncode in (0, 1), res.stderr[-3000:]
    return res.returncode, json.loads(res.stdout)


@pytest.fixture(scope="module")
def lr_bug(tmp_path_factory):
    return probe("lr", str(RESNET / "bug_dying_relu.py"), store=tmp_path_factory.mktemp("store"))


@pytest.mark.slow
def test_lr_probe_flags_the_raised_lr_and_passes_the_reference(lr_bug, store):
    code, bug = lr_bug
    assert (code, bug["verdict"]) == (1, "too_high"), bug["reason"]
    assert bug["lr_configured"] == 1.0 and bug["lr_diverge"] <= 1.0
    code, ref = probe("lr", str(RESNET / "reference.py"), store=store)
    assert (code, ref["verdict"]) == (0, "ok"), ref["reason"]
    assert ref["lr_configured"] == 0.05
    print(f"\nbug: steepest {bug['lr_steepest']:.3g} diverge {bug['lr_diverge']:.3g}; "
          f"reference: steepest {ref['lr_steepest']:.3g} diverge {ref['lr_diverge']:.3g}")


def trained_loss(script, rate, steps=30):
    """The mean training loss after the last 5 of `steps` steps at a constant top rate (the
    script's group ratios kept): the probe's RateSetter, in this process."""
    from invariants.app.probes.lr import RateSetter
    from tracer.runner import run_script
    from tracer.session import TraceConfig
    setter = RateSetter(lambda k: rate)
    run_script(script, [], TraceConfig(steps=steps + 1, dense_steps=1, sample_every=0), lambda rows: None,
               extensions=[setter])
    last = [l for l in setter.losses if l is not None][-5:]
    mean = sum(last) / len(last)
    return mean if math.isfinite(mean) else math.inf


@pytest.mark.slow
def test_steepest_lr_trains_at_least_as_well_as_ten_times_below_or_above(lr_bug):
    steepest = lr_bug[1]["lr_steepest"]
    losses = {f: trained_loss(RESNET / "bug_dying_relu.py", steepest * f) for f in (0.1, 1.0, 10.0)}
    print(f"\n30 steps at {steepest:.3g} x 0.1 / 1 / 10: " + " / ".join(f"{l:.3f}" for l in losses.values()),
          file=sys.stderr)
    assert losses[1.0] <= losses[0.1] and losses[1.0] <= losses[10.0], losses


def test_brightness_augmentation_shows_as_a_smaller_brightness_drop(store):
    drops = {}
    for name, extra in (("plain", []), ("augmented", ["--", "--augment-brightness"])):
        code, out = probe("robustness", str(BRIGHTNESS), "--shift", "brightness=0.5,1.5", *extra, store=store)
        drops[name] = max(s["drop"] for s in out["shifts"])
        assert out["baseline"]["accuracy"] > 0.9 and out["normalisation"]["normalised_alike"]
    print(f"\nlargest brightness drop: plain {drops['plain']:.3f}, augmented {drops['augmented']:.3f}")
    assert drops["plain"] > 0.1 >= drops["augmented"]
    assert drops["plain"] > 3 * drops["augmented"]


@pytest.mark.slow
def test_dying_head_shows_dead_units_the_reference_does_not_have(store, tmp_path):
    ref_json = tmp_path / "ref.json"
    res = run_invar("probe", "robustness", str(RESNET / "reference.py"), "--steps", "20", "--shift", "noise=0.05",
                    "--store", str(store), "--format", "json", "-o", str(ref_json))
    assert res.returncode in (0, 1), res.stderr[-3000:]
    ref = json.loads(ref_json.read_text())
    res = run_invar("probe", "robustness", str(RESNET / "bug_dying_relu.py"), "--steps", "20", "--shift",
                    "noise=0.05", "--against", str(ref_json), "--store", str(store))
    assert res.returncode == 1
    assert "fc.1" in res.stdout and "dead, the reference's" in res.stdout, res.stdout
    worst_ref = max(d["dead_fraction"] for d in ref["dead_units"].values())
    assert worst_ref < 0.1, ref["dead_units"]
    assert not any("dead" in f for f in ref["findings"])


def test_probe_usage_errors(store, tmp_path):
    for args in (("lr", str(BRIGHTNESS), "--min", "1", "--max", "0.1"), ("lr", str(BRIGHTNESS), "--steps", "2"),
                 ("robustness", str(BRIGHTNESS), "--shift", "blur=2"),
                 ("robustness", str(BRIGHTNESS), "--max-drop", "-1"),
                 ("robustness", str(BRIGHTNESS), "--against", str(tmp_path / "none.json")),
                 ("lr", str(tmp_path / "missing.py"))):
        res = run_invar("probe", *args, "--store", str(store))
        assert res.returncode == 2, (args, res.stderr)
        assert "Traceback" not in res.stderr


def test_html_pages_and_no_file_of_the_script_changed(store, tmp_path):
    pytest.importorskip("matplotlib", reason="--format html needs the report extra")
    import shutil
    folder = tmp_path / "project"
    folder.mkdir()
    script = folder / "train.py"
    shutil.copy(BRIGHTNESS, script)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    for kind, extra in (("lr", ["--steps", "30"]), ("robustness", ["--shift", "brightness=0.5"])):
        page = tmp_path / f"{kind}.html"
        res = run_invar("probe", kind, "--store", str(store), "--format", "html", "-o", str(page), *extra,
                        str(script), "--", "--epochs", "2", cwd=folder)
        assert res.returncode in (0, 1, 7), res.stderr[-3000:]
        text = page.read_text()
        assert text.startswith("<!DOCTYPE html>") and "<svg" in text and "<script" not in text
        assert ("learning rate" in text) if kind == "lr" else ("brightness=0.5" in text)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the script's folder untouched
