"""The HTML report end to end: real checks of corpus pipelines rendered with `--format html`,
`invar report` on the stored run, and the page in a headless Chromium (Debian's package),
whose screenshot must show the root cause and non-blank plots. Every corpus variant's page is
checked by tests/e2e/test_eval.py (`invar eval --html`), which runs those checks anyway.

Chromium: the browser test looks for `chromium` on PATH and, running as root with apt-get,
installs Debian's package (`apt-get install -y chromium`) once; elsewhere it is skipped with
a message saying so. The page's own Content-Security-Policy lets no script run and nothing
load from anywhere, so what the screenshot shows is what the file holds.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import pytest

from tests.conftest import ROOT, run_invar

pytest.importorskip("matplotlib", reason="the HTML report needs the report extra: pip install 'torch-invar[report]'")

CASE = ROOT / "corpus" / "head_after_optimizer"
EXTERNAL = re.compile(r"https?://|<script|<link|<img|<iframe|@import|url\((?!#)", re.I)
RENDERED = re.compile(r"rendered in ([0-9.]+) s")
WINDOW = (1280, 2200)  # the screenshot: the verdict, the root cause and the first plots
HIDE_CAUSE = ".cause .title, .cause .cause-text, .cause .fix, .cause .meta { color: transparent !important; }"
HIDE_DATA = '[id*="-checked-"], [id*="-envelope-"] { visibility: hidden !important; }'
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--mute-audio",
                 "--force-device-scale-factor=1")


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Invariants from three reference runs of a corpus case, and the store holding them."""
    d = tmp_path_factory.mktemp("html")
    r = run_invar("infer", str(CASE / "reference.py"), "-o", str(d / "inv.yaml"), "--store", str(d / "store"))
    assert r.returncode == 0, r.stderr
    return d


def _check_html(d: Path, variant: str, name: str, *options: str) -> Tuple[int, str]:
    out = d / f"{name}.html"
    r = run_invar("check", str(CASE / variant), "--against", str(d / "inv.yaml"), "--store", str(d / "store"),
                  "--format", "html", "-o", str(out), *options)
    assert out.exists(), r.stderr
    return r.returncode, out.read_text(encoding="utf-8")


def _section(page: str, anchor: str) -> str:
    start = page.index(f'<section id="{anchor}">')
    return page[start:page.index("</section>", start)]


@pytest.fixture(scope="module")
def bug_page(learned: Path) -> str:
    code, page = _check_html(learned, "bug_head_after_optimizer.py", "bug", "--tensorboard", str(learned / "tb"))
    assert code == 1
    return page


def test_a_corpus_bug_renders_its_root_cause_and_the_violated_variable_against_the_reference(bug_page: str) -> None:
    head = bug_page[:bug_page.index("<svg")]
    assert "FAILED" in head and "not_in_optimizer" in head and "classifier" in head and "fix:" in head
    violations = _section(bug_page, "violations")
    assert "block.classifier.in_optimizer_fraction (train)" in violations
    assert "-envelope-" in violations and "-checked-" in violations
    assert "<svg" in _section(bug_page, "blocks") and "<svg" in _section(bug_page, "curves")
    assert "Output shape" in _section(bug_page, "static")
    assert not EXTERNAL.search(bug_page), EXTERNAL.search(bug_page)
    print(f"bug report: {len(bug_page) / 1024:.0f} KiB, {RENDERED.search(bug_page).group(0)}")


def test_an_ok_variant_is_clean_with_its_curves(learned: Path) -> None:
    code, page = _check_html(learned, "ok_seed.py", "ok")
    assert code == 0
    assert "<b>clean</b>" in page and "clean: no invariant violated" in page
    assert "-checked-" in _section(page, "curves") and "-envelope-" in _section(page, "curves")


def test_report_rerenders_the_stored_check_and_says_what_rendering_adds(learned: Path, bug_page: str) -> None:
    run_id = re.search(r"run (\d{8}-\d{6}-[0-9a-f]+)", bug_page).group(1)
    store = str(learned / "store")
    started = time.perf_counter()
    as_json = run_invar("report", run_id, "--store", store, "--format", "json", "-o", str(learned / "again.json"))
    json_s = time.perf_counter() - started
    started = time.perf_counter()
    as_html = run_invar("report", run_id, "--store", store, "-o", str(learned / "again.html"))
    html_s = time.perf_counter() - started
    assert as_json.returncode == 0 and as_html.returncode == 0, as_html.stderr
    again = (learned / "again.html").read_text()
    assert "not_in_optimizer" in again and "-envelope-" in _section(again, "violations")
    print(f"rendering adds {html_s - json_s:.2f} s to a check (invar report: html {html_s:.2f} s, "
          f"json {json_s:.2f} s; the page itself: {RENDERED.search(again).group(0)})")


def test_check_tensorboard_writes_the_runs_scalars_and_violations(learned: Path, bug_page: str) -> None:
    pytest.importorskip("tensorboard", reason="--tensorboard needs the tensorboard package")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run_id = re.search(r"run (\d{8}-\d{6}-[0-9a-f]+)", bug_page).group(1)
    events = EventAccumulator(str(learned / "tb" / f"invar-{run_id}"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    loss = events.Scalars("train/loss.value")
    assert [e.step for e in loss][:5] == [0, 1, 2, 3, 4] and len(loss) >= 10
    assert "train/block.classifier.grad_norm" in events.Tags()["scalars"]
    verdict = events.Tensors("invar/verdict/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "FAILED" in verdict and "not_in_optimizer" in verdict and "fix:" in verdict
    first = events.Tensors("invar/violations/text_summary")[0]
    assert first.step == 0 and b"classifier" in first.tensor_proto.string_val[0]


# -- the browser --------------------------------------------------------------------------------
def _chromium() -> Optional[str]:
    """The Chromium binary, installing Debian's package where this process may (root, apt-get)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        if subprocess.run(cmd, capture_output=True, env=env, timeout=900).returncode != 0:
            return None
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def chromium() -> str:
    found = _chromium()
    if found is None:
        pytest.skip("no Chromium: install Debian's package (apt-get install chromium) to run the browser test; "
                    "it could not be installed here (not root, or no apt-get, or no network to the mirrors)")
    return found


def _screenshot(browser: str, page: Path, png: Path, profile: Path) -> None:
    r = subprocess.run([browser, *BROWSER_FLAGS, f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                        f"--screenshot={png}", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert png.exists(), r.stderr[-2000:]


def _with_style(page: str, css: str) -> str:
    return page.replace("</head>", f"<style>{css}</style></head>", 1)


def _changed(a: Path, b: Path) -> Tuple[int, int]:
    """How many pixels differ between two screenshots, and the topmost row that differs."""
    from PIL import Image, ImageChops
    diff = ImageChops.difference(Image.open(a).convert("RGB"), Image.open(b).convert("RGB")).convert("L")
    mask = diff.point(lambda v: 255 if v > 24 else 0)
    box = mask.getbbox()
    return mask.histogram()[255], (box[1] if box else -1)


def test_the_report_in_a_browser_shows_the_root_cause_and_non_blank_plots(chromium: str, bug_page: str,
                                                                           tmp_path: Path) -> None:
    pages: Dict[str, Path] = {}
    for name, css in (("report", ""), ("no_cause", HIDE_CAUSE), ("no_data", HIDE_DATA)):
        pages[name] = tmp_path / f"{name}.html"
        pages[name].write_text(_with_style(bug_page, css) if css else bug_page, encoding="utf-8")
    started = time.perf_counter()
    shots: Dict[str, Path] = {}
    for name, page in pages.items():
        shots[name] = tmp_path / f"{name}.png"
        _screenshot(chromium, page, shots[name], tmp_path / "profile")
    seconds = time.perf_counter() - started
    from PIL import Image
    image = Image.open(shots["report"]).convert("L")
    assert image.size == WINDOW
    low, high = image.getextrema()
    assert high - low > 128 and sum(1 for n in image.histogram() if n) > 16, "the screenshot is blank"
    cause_pixels, cause_top = _changed(shots["report"], shots["no_cause"])
    data_pixels, _ = _changed(shots["report"], shots["no_data"])
    # The root cause's words draw pixels, on the first screen (above the fold of a laptop).
    assert cause_pixels > 2000 and 0 <= cause_top < 800, (cause_pixels, cause_top)
    # The plots draw their data: the checked run's line and the reference envelope.
    assert data_pixels > 500, data_pixels
    print(f"browser test: {shots['report']} ({chromium}); root cause {cause_pixels} px from y={cause_top}, "
          f"plot data {data_pixels} px; 3 screenshots in {seconds:.1f} s")
