"""The corpus cases and their `case.yaml` contract (docs/corpus.md).

`case_dirs` finds the case folders of a corpus (this one, or any laid out like it: `invar
eval DIR` reads them through it); `validate` lists every way a case folder breaks the
contract (the fast test and the verifier use it). The optional
`measure` list of a bug variant names the symptom measurements `corpus.verify` performs
(corpus/README.md); `invar eval` does not read it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, FrozenSet, List

import yaml

CORPUS = Path(__file__).resolve().parent
CONTRACT = CORPUS.parent / "docs" / "corpus.md"

# The vocabulary as docs/corpus.md listed it when this was written; the document wins.
KNOWN_CAUSES = frozenset({
    "frozen", "no_gradient", "not_in_optimizer", "input_size", "input_scale",
    "eval_input_mismatch", "output_width", "leakage", "learning_rate", "batch_size",
    "dead_units", "stale_gradients", "eval_mode", "loss_broadcast", "loss_trend",
    "output_scale", "data_order",
})

def cause_vocabulary() -> FrozenSet[str]:
    """The `expect.causes` vocabulary: the backticked words after "Cause families" in
    docs/corpus.md, or KNOWN_CAUSES when the document is not there (an installed package)."""
    try:
        text = CONTRACT.read_text()
    except OSError:
        return KNOWN_CAUSES
    start = text.find("Cause families")
    if start < 0:
        return KNOWN_CAUSES
    block = text[start:].split("\n\n", 1)[0]
    words = re.findall(r"`([a-z_]+)`", block)
    return frozenset(words) or KNOWN_CAUSES


SOURCE_KINDS = frozenset({"report", "forum", "stackoverflow", "github-issue"})
VARIANT_KINDS = frozenset({"bug", "ok"})
SEVERITIES = frozenset({"error", "warning"})
REQUIRED = ("case", "title", "source", "data", "model", "reference", "chance", "variants")
BUG_REQUIRED = ("root_cause", "why_silent", "symptom", "severity", "expect")
FORBIDDEN_IMPORT = re.compile(r"^\s*(from|import)\s+(tracer|invariants|solver)\b", re.M)


def case_dirs(names: List[str] | None = None, root: Path = CORPUS) -> List[Path]:
    """Case folders of the corpus at `root` (those with a case.yaml), sorted; `names`
    selects some by folder name."""
    found = sorted(p.parent for p in Path(root).glob("*/case.yaml"))
    if not names:
        return found
    by_name = {p.name: p for p in found}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"no corpus case named {', '.join(unknown)} "
                         f"(cases: {', '.join(sorted(by_name))})")
    return [by_name[n] for n in names]


def load(case: Path) -> Dict[str, Any]:
    """The parsed case.yaml of a case folder."""
    return yaml.safe_load((case / "case.yaml").read_text())


def scripts(meta: Dict[str, Any]) -> List[str]:
    """The reference script followed by every variant script."""
    ref = (meta.get("reference") or {}).get("script", "reference.py")
    return [ref] + [v["script"] for v in meta.get("variants") or [] if isinstance(v, dict)]


def validate(case: Path) -> List[str]:
    """Every way `case` breaks the corpus contract; empty when it keeps it."""
    try:
        meta = load(case)
    except (OSError, yaml.YAMLError) as e:
        return [f"{case.name}/case.yaml cannot be read: {e}"]
    if not isinstance(meta, dict):
        return [f"{case.name}/case.yaml is not a mapping"]
    errors = [f"missing field {f!r}" for f in REQUIRED if f not in meta]
    if meta.get("case") != case.name:
        errors.append(f"case is {meta.get('case')!r}, the folder is {case.name!r}")
    errors += _source_errors(meta.get("source"))
    chance = meta.get("chance")
    if not isinstance(chance, (int, float)) or not 0 <= chance < 1:
        errors.append(f"chance must be a number in [0, 1), got {chance!r}")
    ref = meta.get("reference")
    if not isinstance(ref, dict) or not isinstance(ref.get("script"), str):
        errors.append("reference must be a mapping with a script")
    elif not isinstance(ref.get("args", []), list):
        errors.append("reference.args must be a list")
    variants = meta.get("variants")
    if not isinstance(variants, list) or not variants:
        errors.append("variants must be a non-empty list")
        variants = []
    vocabulary = cause_vocabulary()
    for i, v in enumerate(variants):
        errors += [f"variants[{i}]: {e}" for e in _variant_errors(v, vocabulary)]
    kinds = {v.get("kind") for v in variants if isinstance(v, dict)}
    if variants and not {"bug", "ok"} <= kinds:
        errors.append("a case needs at least one bug and one ok variant")
    names = [s for s in scripts(meta) if isinstance(s, str)]
    if len(names) != len(set(names)):
        errors.append("a script is listed twice")
    for name in names:
        errors += _script_errors(case, name)
    return [f"{case.name}: {e}" for e in errors]


def _source_errors(source: Any) -> List[str]:
    if not isinstance(source, dict):
        return ["source must be a mapping with ref, url and kind"]
    errors = [f"source.{f} is missing or empty" for f in ("ref", "url", "kind") if not source.get(f)]
    if source.get("url") and not str(source["url"]).startswith("https://"):
        errors.append(f"source.url is not an https URL: {source['url']!r}")
    if source.get("kind") and source["kind"] not in SOURCE_KINDS:
        errors.append(f"source.kind {source['kind']!r} is not one of {sorted(SOURCE_KINDS)}")
    return errors


def _variant_errors(v: Any, vocabulary: FrozenSet[str]) -> List[str]:
    if not isinstance(v, dict):
        return ["not a mapping"]
    script, kind = v.get("script"), v.get("kind")
    errors = []
    if not isinstance(script, str):
        return ["missing script"]
    if kind not in VARIANT_KINDS:
        errors.append(f"{script}: kind {kind!r} is not bug or ok")
    elif not script.startswith(f"{kind}_"):
        errors.append(f"{script}: a {kind} variant's script must be named {kind}_*.py")
    if not isinstance(v.get("args", []), list):
        errors.append(f"{script}: args must be a list")
    if kind == "ok" and not v.get("change"):
        errors.append(f"{script}: an ok variant needs `change`")
    if kind != "bug":
        return errors
    errors += [f"{script}: missing {f!r}" for f in BUG_REQUIRED if not v.get(f)]
    if v.get("severity") and v["severity"] not in SEVERITIES:
        errors.append(f"{script}: severity {v['severity']!r} is not error or warning")
    expect = v.get("expect") or {}
    causes = expect.get("causes") if isinstance(expect, dict) else None
    if not isinstance(causes, list) or not causes:
        errors.append(f"{script}: expect.causes must be a non-empty list")
    else:
        errors += [f"{script}: cause {c!r} is not in the vocabulary of docs/corpus.md"
                   for c in causes if c not in vocabulary]
    locus = expect.get("locus") if isinstance(expect, dict) else None
    if locus is not None and not isinstance(locus, str):
        errors.append(f"{script}: expect.locus must be a string or null")
    if isinstance(expect, dict) and not isinstance(expect.get("universal", False), bool):
        errors.append(f"{script}: expect.universal must be true or false")
    measure = v.get("measure")
    if not isinstance(measure, list) or not measure or not all(
            isinstance(m, dict) and isinstance(m.get("check"), str) for m in measure):
        errors.append(f"{script}: measure must be a non-empty list of {{check: NAME, ...}}")
    return errors


def _script_errors(case: Path, name: str) -> List[str]:
    path = case / name
    if not path.is_file():
        return [f"script {name} does not exist"]
    text = path.read_text()
    errors = []
    if FORBIDDEN_IMPORT.search(text):
        errors.append(f"{name} imports invar (tracer, invariants or solver)")
    if not re.search(r"^def main\(", text, re.M):
        errors.append(f"{name} has no top-level `def main(argv=None)`")
    if "__main__" not in text:
        errors.append(f"{name} has no `if __name__ == \"__main__\":` entry point")
    common = case / "common.py"
    seeding = text + (common.read_text() if common.is_file() else "")
    if "SEED" not in seeding or "manual_seed" not in seeding:
        errors.append(f"{name} does not seed itself from the SEED environment variable")
    return errors
