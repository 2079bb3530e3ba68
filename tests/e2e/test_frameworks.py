"""The tracer on the code people run (issue 12): the HF Trainer, Lightning's automatic and
manual optimization, a loop without torch.optim, and torch.compile, traced on the corpus's
framework cases (docs/observations.md). Skipped where the `frameworks` extra is missing."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Dict, List

import pytest

from invariants import invfile
from tests.conftest import ROOT, run_invar
from tracer.runner import run_script
from tracer.session import TraceConfig

CORPUS = ROOT / "corpus"


def _trace(script: str, steps: int = 12) -> Dict[str, List]:
    rows: list = []
    with contextlib.redirect_stdout(io.StringIO()):
        res = run_script(CORPUS / script, [], TraceConfig(steps=steps), rows.extend)
    assert res.status == "budget" and not res.faults, (res.status, res.error, res.faults)
    by: Dict[str, List] = {}
    for step, phase, variable, value, text in rows:
        by.setdefault(f"{phase}:{variable}", []).append(value if value is not None else text)
    return by


def test_hf_trainer_is_observed_like_a_plain_loop() -> None:
    pytest.importorskip("transformers")
    seen = _trace("hf_trainer_bert/reference.py")
    # the model is called with keywords only and computes its own loss from labels=
    assert seen["train:input.dtype"][0] == "int64" and seen["train:input.batch"][0] == 16.0
    assert seen["train:input.attention_mask.mean"] and len(seen["train:loss.value"]) == 12
    assert seen["train:loss.class_width"][0] == 3.0 and seen["train:label.max"][0] == 2.0
    assert seen["train:output.width"][0] == 3.0  # the logits, not the scalar loss
    assert seen["train:block.classifier.no_grad_fraction"] == [0.0] * 12


def test_hf_trainer_infer_records_the_static_phase(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    inv = tmp_path / "inv.yaml"
    r = run_invar("infer", str(CORPUS / "hf_trainer_bert/reference.py"), "--runs", "1", "--steps", "4",
                  "-o", str(inv), "--store", str(tmp_path / "store"), timeout=600)
    assert r.returncode == 0, r.stderr
    targets = {t for i in invfile.load(str(inv)).invariants for t in i.target}
    assert any(t.startswith("static.") for t in targets), sorted(targets)
    assert {"loss.class_width", "input.dtype", "output.shape", "label.shape"} <= targets


@pytest.mark.parametrize("script", ["reference.py", "ok_manual_optimization.py"])
def test_lightning_steps_have_their_gradients_and_zero_grads(script: str) -> None:
    # automatic optimization runs forward, zero_grad and backward inside optimizer.step(closure)
    pytest.importorskip("lightning")
    seen = _trace(f"lightning_classifier/{script}")
    assert seen["train:block.head.no_grad_fraction"] == [0.0] * 12
    # one per step, and Lightning's own model.zero_grad() before each validation (step 10)
    assert seen["train:optim.zero_grad_calls"] == [1.0] * 9 + [2.0, 1.0]
    assert seen["train:loss.value"] and seen["train:block.head.update_ratio"]


def test_a_loop_without_torch_optim_is_traced_by_its_backward() -> None:
    seen = _trace("word_lm_manual_sgd/reference.py")
    assert seen["train:block.encoder.no_grad_fraction"] == [0.0] * 12
    assert seen["train:optim.zero_grad_calls"] == [1.0] * 11
    assert seen["train:block.rnn.update_ratio"][0] > 0 and seen["train:clip.max_norm"][0] == 0.25
    assert seen["train:input.shape"][0] == "16"  # time-major [bptt, batch]: dim 0 is not the batch here


@pytest.mark.slow
def test_a_frozen_block_under_compile_fails_eagerly_learned_invariants(tmp_path: Path) -> None:
    inv, store = tmp_path / "inv.yaml", str(tmp_path / "store")
    r = run_invar("infer", str(CORPUS / "compiled_classifier/ok_eager.py"), "--runs", "2", "--steps", "6",
                  "-o", str(inv), "--store", store, timeout=600)
    assert r.returncode == 0, r.stderr
    r = run_invar("check", str(CORPUS / "compiled_classifier/bug_backbone_never_unfrozen.py"), "--against",
                  str(inv), "--store", store, "--steps", "6", timeout=600)
    assert r.returncode == 1 and "frozen" in r.stdout and "backbone" in r.stdout, (r.stdout, r.stderr)
    assert "_orig_mod" not in r.stdout
