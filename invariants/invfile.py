"""Read and write invariant files (YAML or JSON). The file is data: it is parsed with a
safe loader, checked field by field against the template registry, and nothing in it is
ever executed or imported. Every problem raises `InvariantFileError`, which names the
file, the entry and the field, and says what to write instead.

Output is canonical: fixed key order, invariants sorted by (locus, template, id), floats
written by `repr` so they round-trip exactly; export -> load -> export is byte-identical.
"""
from __future__ import annotations

import difflib
import json
import math
import os
import re
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional, Tuple, Union

import yaml

from invariants import registry
from invariants.errors import InvarError
from invariants.model import (ENTRY_KEYS, ORIGINS, PHASES, SCHEMA_VERSION, SEVERITIES, STATUSES, WILDCARD,
                              Invariant, InvariantSet, Support, When)

FORMATS = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}
# The largest invariant file read: ~14,000 entries (the corpus's largest is ~0.2 MiB). The
# YAML parser takes seconds per MiB and far more memory, so a bigger file is refused unread.
MAX_FILE_BYTES = 8 * 2**20
TOP_KEYS = ("schema", "meta", "invariants")
OPTIONAL_ENTRY_KEYS = ("locus", "origin")
WHEN_KEYS = ("phase", "steps")
SUPPORT_KEYS = ("runs", "observations", "span")
OPTIONAL_SUPPORT_KEYS = ("first",)
_YAML_TAG_PREFIX = "tag:yaml.org,2002:"
# What to write when a hand-added entry lacks a field that only mining fills in.
_MISSING_HINTS = {
    "support": " (a hand-written entry can say `support: {runs: 0, observations: 0, span: null}`)",
    "when": " (e.g. `when: {phase: train, steps: [0, null]}`)",
    "status": " (a hand-written entry is usually `status: accepted`)",
}


class InvariantFileError(InvarError):
    """A malformed invariant file (or an invariant set that cannot be written).

    `path` is the file, `entry` the invariant (`invariants[3] (id range:input.mean@train)`)
    and `field` the offending field (`expect.min`), each None when not applicable.
    """

    def __init__(self, message: str, path: Optional[str] = None, entry: Optional[str] = None,
                 field: Optional[str] = None):
        self.message, self.path, self.entry, self.field = message, path, entry, field
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [p for p in (self.path, self.entry) if p]
        if self.field:
            parts.append(f"field {self.field!r}")
        return ": ".join(parts + [self.message])


# ---------------------------------------------------------------------------- reading

def format_of(path: Union[str, Path]) -> str:
    """'yaml' or 'json' from the file extension; InvariantFileError for anything else."""
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        raise InvariantFileError(
            f"cannot tell the format from the extension {ext or '(none)'!r}: "
            f"use .yaml, .yml or .json", path=str(path))
    return FORMATS[ext]


def load(path: Union[str, Path]) -> InvariantSet:
    """Reads and validates an invariant file; the format comes from the extension."""
    fmt = format_of(path)
    return loads(read_text(path), fmt, source=str(path))


def read_text(path: Union[str, Path]) -> str:
    """An invariant file's text, refused before anything parses it when it is no regular
    file (a FIFO would block, a device never end) or holds more than MAX_FILE_BYTES."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # opening a FIFO must not wait
    except OSError as e:
        raise InvariantFileError(f"cannot read the file: {e.strerror or e}", path=str(path)) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise InvariantFileError(f"not a regular file ({kind}): give an invariant file", path=str(path))
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(MAX_FILE_BYTES + 1)
        except OSError as e:
            raise InvariantFileError(f"cannot read the file: {e.strerror or e}", path=str(path)) from None
    if len(data) > MAX_FILE_BYTES:
        raise InvariantFileError(f"larger than {MAX_FILE_BYTES // 2**20} MiB, the most an invariant file may hold "
                                 f"(~14,000 invariants): is it an invariant file?", path=str(path))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvariantFileError(f"not UTF-8 text ({e.reason} at byte {e.start})", path=str(path)) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # universal newlines, as open() reads text


def loads(text: str, fmt: str = "yaml", source: Optional[str] = None) -> InvariantSet:
    """Parses and validates invariant-file text; `source` names it in errors."""
    src = source or f"<{fmt} text>"
    if fmt not in ("yaml", "json"):
        raise InvariantFileError(f"unknown format {fmt!r}: expected 'yaml' or 'json'", path=src)
    try:
        data = _parse_yaml(text, src) if fmt == "yaml" else _parse_json(text, src)
        return _Validator(src).document(data)
    except RecursionError:
        raise InvariantFileError("nested too deeply to be an invariant file", path=src) from None


class _StrictSafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader (only the safe constructors) that also refuses duplicate keys, which
    the stock loader resolves silently in favour of the last: an edited bound added below
    the old one must not win or lose by accident."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        seen: Dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})",
                    key_node.start_mark)
            if isinstance(key, (str, int, float, bool)):
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def compose_node(self, parent: Any, index: Any) -> Any:
        # Aliases let a few lines expand into an exponentially large (or cyclic) document;
        # invar never writes them, so refuse them rather than walk what they expand to.
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in invariant files: write the "
                "value out", self.peek_event().start_mark)
        return super().compose_node(parent, index)


def _parse_yaml(text: str, src: str) -> Any:
    try:
        # Safe constructors only (a SafeLoader subclass): python/* tags cannot construct.
        return yaml.load(text, Loader=_StrictSafeLoader)  # noqa: S506
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = getattr(e, "problem", None) or getattr(e, "context", None) or str(e)
        tag = re.search(r"for the tag '([^']*)'", problem)
        if tag:
            raise InvariantFileError(
                f"refusing YAML tag {tag.group(1).replace(_YAML_TAG_PREFIX, '!!')} at {where} "
                f"(invariant files are data; nothing is executed): remove the tag and write "
                f"the value as plain YAML", path=src) from None
        raise InvariantFileError(f"invalid YAML at {where}: {problem}", path=src) from None
    except ValueError as e:  # an integer beyond Python's digit limit for int(str)
        raise InvariantFileError(_unreadable_number(e), path=src) from None


def _parse_json(text: str, src: str) -> Any:
    def pairs(items: List[Tuple[str, Any]]) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise InvariantFileError(f"invalid JSON: duplicate key {k!r}", path=src)
            out[k] = v
        return out

    def constant(name: str) -> NoReturn:
        raise InvariantFileError(f"invalid JSON: {name} is not a number JSON allows "
                                 f"(use null for 'no bound')", path=src)

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as e:
        raise InvariantFileError(f"invalid JSON: line {e.lineno}, column {e.colno}: {e.msg}",
                                 path=src) from None
    except ValueError as e:  # an integer beyond Python's digit limit for int(str)
        raise InvariantFileError("invalid JSON: " + _unreadable_number(e), path=src) from None


def _unreadable_number(e: ValueError) -> str:
    limit = getattr(sys, "get_int_max_str_digits", lambda: 4300)()
    if "digits" in str(e):
        return f"a number with more than {limit} digits, which no invariant needs: write it shorter"
    return f"a value that cannot be read ({e})"


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _got(v: Any) -> str:
    shown = repr(v)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"got {_type_name(v)}" if v is None else f"got {_type_name(v)} {shown}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number_hint(v: Any) -> str:
    # PyYAML reads YAML 1.1: `1e-3` (no dot) is a string, `1.0e-3` a float.
    if isinstance(v, str) and re.fullmatch(r"[-+]?[0-9]+[eE][-+]?[0-9]+", v):
        mantissa, exp = re.split("[eE]", v)
        return f" (YAML 1.1 reads {v} as text: write {mantissa}.0e{exp})"
    return ""


class _Validator:
    """Walks loaded data; raises InvariantFileError at the first problem, with its place."""

    def __init__(self, src: str):
        self.src = src
        self.entry: Optional[str] = None

    def fail(self, message: str, field: Optional[str] = None) -> NoReturn:
        raise InvariantFileError(message, path=self.src, entry=self.entry, field=field)

    def keys(self, m: Dict[Any, Any], allowed: Tuple[str, ...], where: Optional[str],
             required: Tuple[str, ...]) -> None:
        """Unknown keys first: a typo (`severty`) explains the missing key it causes."""
        unknown = [k for k in m if k not in allowed]
        if unknown:
            names = ", ".join(repr(k) for k in unknown)
            close = [c for k in unknown if isinstance(k, str)
                     for c in difflib.get_close_matches(k, allowed, n=1)]
            mean = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            self.fail(f"unknown key{'s' if len(unknown) > 1 else ''} {names}{mean}; "
                      f"allowed: {', '.join(allowed)}", where + "." + str(unknown[0]) if where else str(unknown[0]))
        for k in required:
            if k not in m:
                self.fail(f"missing; {where or 'every entry'} needs {', '.join(required)}"
                          f"{_MISSING_HINTS.get(k, '')}",
                          f"{where}.{k}" if where else k)

    def plain(self, v: Any, where: str) -> None:
        """Only JSON-representable, finite values (YAML can also make dates, sets, bytes)."""
        if isinstance(v, dict):
            for k, x in v.items():
                if not isinstance(k, str):
                    self.fail(f"keys must be text, got {_type_name(k)} {k!r}", where)
                self.plain(x, f"{where}.{k}")
        elif isinstance(v, list):
            for i, x in enumerate(v):
                self.plain(x, f"{where}[{i}]")
        elif isinstance(v, float) and not math.isfinite(v):
            self.fail(f"{v!r} is not allowed (use null for 'no bound')", where)
        elif not (v is None or isinstance(v, (str, int, float, bool))):
            self.fail(f"expected plain data (text, number, true/false, null, list, mapping), "
                      f"{_got(v)}; quote it to make it text", where)

    def document(self, data: Any) -> InvariantSet:
        if data is None:
            self.fail("the file is empty; expected a mapping with keys schema, meta, invariants")
        if not isinstance(data, dict):
            self.fail(f"expected a mapping at the top level (schema, meta, invariants), "
                      f"got {_type_name(data)}")
        if "schema" not in data:
            self.fail(f"missing 'schema' (this invar writes `schema: {SCHEMA_VERSION}`); "
                      f"is this an invariant file?")
        schema = data["schema"]
        if not _is_int(schema):
            self.fail(f"expected an integer schema version, {_got(schema)}", "schema")
        if schema > SCHEMA_VERSION:
            self.fail(f"written by a newer invar (schema {schema}; this invar reads "
                      f"≤ {SCHEMA_VERSION}): upgrade invar", "schema")
        if schema < 1:
            self.fail(f"schema {schema} does not exist (versions start at 1)", "schema")
        # After the version check: a newer schema may add keys, and "upgrade" is the fix.
        self.keys(data, TOP_KEYS, None, ())
        meta = data.get("meta", {})
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            self.fail(f"expected a mapping, {_got(meta)}", "meta")
        self.plain(meta, "meta")
        if "invariants" not in data:
            self.fail("missing 'invariants' (write `invariants: []` for an empty set)")
        entries = data["invariants"]
        if not isinstance(entries, list):
            self.fail(f"expected a list of invariants, {_got(entries)}", "invariants")
        seen: Dict[str, int] = {}
        out: List[Invariant] = []
        for i, raw in enumerate(entries):
            inv = self.invariant(i, raw)
            if inv.id in seen:
                self.fail(f"duplicate id {inv.id!r} (first used by invariants[{seen[inv.id]}]); "
                          f"ids must be unique: rename or delete one", "id")
            seen[inv.id] = i
            out.append(inv)
        self.entry = None
        return InvariantSet(schema=schema, meta=meta, invariants=tuple(out))

    def invariant(self, i: int, raw: Any) -> Invariant:
        self.entry = f"invariants[{i}]"
        if not isinstance(raw, dict):
            self.fail(f"expected a mapping (id, template, target, ...), {_got(raw)}")
        iid = raw.get("id")
        if isinstance(iid, str) and iid:
            self.entry = f"invariants[{i}] (id {iid})"
        self.keys(raw, ENTRY_KEYS, None, tuple(k for k in ENTRY_KEYS if k not in OPTIONAL_ENTRY_KEYS))
        if not isinstance(iid, str) or not iid or any(c.isspace() for c in iid):
            self.fail(f"expected non-empty text without spaces, {_got(iid)}", "id")
        cls = self.template(raw["template"])
        target = self.target(raw["target"], cls)
        expect = self.expect(raw["expect"], cls)
        when = self.when(raw["when"])
        for name, allowed in (("severity", SEVERITIES), ("status", STATUSES)):
            if raw[name] not in allowed:
                self.fail(f"expected one of {', '.join(allowed)}, {_got(raw[name])}", name)
        locus = raw.get("locus")
        if locus is not None and not (isinstance(locus, str) and locus):
            self.fail(f"expected a module name or null (the whole run), {_got(locus)}", "locus")
        origin = raw.get("origin", ORIGINS[0])
        if origin not in ORIGINS:
            self.fail(f"expected one of {', '.join(ORIGINS)} (or no origin: mined), {_got(origin)}", "origin")
        support = self.support(raw["support"])
        if not isinstance(raw["why"], str):
            self.fail(f"expected text (the invariant in words), {_got(raw['why'])}", "why")
        return Invariant(id=iid, template=raw["template"], target=target, expect=expect, when=when,
                         severity=raw["severity"], status=raw["status"], support=support,
                         why=raw["why"], locus=locus, origin=origin)

    def template(self, name: Any) -> Any:
        if not isinstance(name, str):
            self.fail(f"expected a template name, {_got(name)}", "template")
        try:
            return registry.template(name)
        except KeyError:
            known = sorted(registry.known_templates())
            close = difflib.get_close_matches(name, known, n=1)
            mean = f"did you mean {close[0]!r}? " if close else ""
            self.fail(f"unknown template {name!r}: {mean}known templates: {', '.join(known)}",
                      "template")

    def target(self, v: Any, cls: Any) -> Tuple[str, ...]:
        n = cls.ARITY
        names = "variable name" if n == 1 else "variable names"
        if isinstance(v, str):
            self.fail(f"expected a list of {n} {names}, got str {v!r} (write [{v}])", "target")
        if not isinstance(v, list):
            self.fail(f"expected a list of {n} {names}, {_got(v)}", "target")
        if len(v) != n:
            self.fail(f"template {cls.NAME!r} takes {n} {names}, got {len(v)}: {v!r}", "target")
        for j, x in enumerate(v):
            if not isinstance(x, str) or not x:
                self.fail(f"expected a variable name (see docs/observations.md), {_got(x)}",
                          f"target[{j}]")
            if WILDCARD in x:
                self.pattern(x, j, WILDCARD in v[0])
        return tuple(v)

    def pattern(self, target: str, j: int, first_quantified: bool) -> None:
        """A quantified target: one WILDCARD, with a fixed part to anchor it; a later
        target's WILDCARD is bound by the first target's, so that one must have one."""
        where = f"target[{j}]"
        if any(c.isspace() for c in target):
            self.fail(f"a variable name or pattern has no spaces, got {target!r}", where)
        if target.count(WILDCARD) > 1:
            self.fail(f"a pattern holds one {WILDCARD} (it matches one or more characters, dots "
                      f"included), got {target!r}", where)
        if target == WILDCARD:
            self.fail(f"{target!r} would match every variable: name a family, e.g. "
                      f"'block.{WILDCARD}.no_grad_fraction'", where)
        if not first_quantified:
            self.fail(f"{target!r} has a {WILDCARD} but target[0] has none to bind it: quantify "
                      f"target[0] too, or name the variable", where)

    def expect(self, v: Any, cls: Any) -> Dict[str, Any]:
        fields = cls.EXPECT
        if not isinstance(v, dict):
            self.fail(f"expected a mapping of {', '.join(fields) or 'nothing ({})'}, {_got(v)}", "expect")
        unknown = [k for k in v if k not in fields]
        if unknown:
            allowed = ", ".join(fields) if fields else "none (write `expect: {}`)"
            self.fail(f"template {cls.NAME!r} has no parameter "
                      f"{', '.join(repr(k) for k in unknown)}; its parameters: {allowed}",
                      f"expect.{unknown[0]}")
        for name, f in fields.items():
            if name not in v:
                if f.required:
                    self.fail(f"missing: template {cls.NAME!r} needs it ({f.doc or f.type_names()})",
                              f"expect.{name}")
                continue
            if not f.accepts(v[name]):
                self.fail(f"expected {f.type_names()}, {_got(v[name])}{_number_hint(v[name])}",
                          f"expect.{name}")
            self.plain(v[name], f"expect.{name}")
        lo, hi = v.get("min"), v.get("max")
        if _is_number(lo) and _is_number(hi) and lo > hi:
            self.fail(f"min ({lo!r}) is greater than max ({hi!r}): no value could pass", "expect.min")
        problem = cls.check_expect(v) if hasattr(cls, "check_expect") else None
        if problem is not None:
            self.fail(*problem)
        return v

    def when(self, v: Any) -> When:
        if not isinstance(v, dict):
            self.fail(f"expected a mapping with phase and steps, {_got(v)}", "when")
        self.keys(v, WHEN_KEYS, "when", WHEN_KEYS)
        if v["phase"] not in PHASES:
            self.fail(f"expected one of {', '.join(PHASES)}, {_got(v['phase'])}", "when.phase")
        steps = v["steps"]
        if not (isinstance(steps, list) and len(steps) == 2 and _is_int(steps[0]) and steps[0] >= 0
                and (steps[1] is None or _is_int(steps[1]))):
            self.fail(f"expected [first, last] with first an integer >= 0 and last an integer "
                      f"or null (open-ended), {_got(steps)}", "when.steps")
        if steps[1] is not None and steps[1] < steps[0]:
            self.fail(f"the window ends ({steps[1]}) before it starts ({steps[0]})", "when.steps")
        return When(phase=v["phase"], steps=(steps[0], steps[1]))

    def support(self, v: Any) -> Support:
        if not isinstance(v, dict):
            self.fail(f"expected a mapping with runs, observations, span, {_got(v)}", "support")
        self.keys(v, SUPPORT_KEYS + OPTIONAL_SUPPORT_KEYS, "support", SUPPORT_KEYS)
        for name in ("runs", "observations"):
            if not (_is_int(v[name]) and v[name] >= 0):
                self.fail(f"expected an integer >= 0, {_got(v[name])}", f"support.{name}")
        span = v["span"]
        if span is not None and not isinstance(span, list):
            self.fail(f"expected a list ([min, max] or the observed values) or null, {_got(span)}",
                      "support.span")
        self.plain(span, "support.span")
        first = v.get("first")
        if first is not None and not (_is_int(first) and first >= 0):
            self.fail(f"expected the first step observed (an integer >= 0) or null, {_got(first)}", "support.first")
        return Support(runs=v["runs"], observations=v["observations"], span=span, first=first)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ---------------------------------------------------------------------------- writing

YAML_HEADER = """\
# invar invariant file (schema {schema}). Review it like code; `invar check` reads it.
#
# meta: how the reference runs were made (script, args, runs, steps, created, versions).
# Each entry under `invariants:` is one fact that held in every reference run:
#   id        stable name, template:target@phase; `invar diff` lines entries up by it
#   template  the kind of fact (constant, one_of, range, magnitude, equal, ratio, ...)
#   target    the traced variables it is about (docs/observations.md)
#   expect    what must hold; edit a bound here and `invar check` uses your value
#   when      phase (train | eval | any) and inclusive step window [first, last]; null = open
#   severity  error fails `invar check`; warning is reported only
#   status    proposed (mined) | accepted (reviewed) | disabled (skipped by `invar check`)
#   locus     the module/block it is about; null = the whole run
#   support   the evidence: reference runs, observations, observed span, first step observed
#   why       the fact in words
#
# Regenerate: invar infer <script> --runs N --steps S -o <this file> (this replaces
# your edits; write to a new file and compare with `invar diff old new` first).
# Loading never executes anything in this file; YAML tags such as !!python/* are refused.
"""


class _Dumper(yaml.SafeDumper):
    """Block mappings, flow lists of scalars (`target: [a, b]`), indented sequences, no
    anchors: one fact per line, so a review diff shows exactly what changed."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_list(dumper: yaml.SafeDumper, data: List[Any]) -> yaml.Node:
    flat = all(not isinstance(x, (list, dict)) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


def _represent_dict(dumper: yaml.SafeDumper, data: Dict[str, Any]) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=False)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(dict, _represent_dict)


def dumps(s: InvariantSet, fmt: str = "yaml") -> str:
    """The set as canonical YAML (with an explanatory header) or JSON text.

    The output is validated like a file being loaded, so whatever is written loads back;
    an invalid set raises InvariantFileError naming the entry and field.
    """
    data = s.to_data()
    _Validator("<invariant set being written>").document(data)
    if fmt == "yaml":
        body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                         width=10_000, default_flow_style=False)
        # A blank line between entries; a line at this indent can only start an entry.
        body = re.sub(r"\n(  - id: )", r"\n\n\1", body)
        return YAML_HEADER.format(schema=s.schema) + "\n" + body
    if fmt == "json":
        return _json(data, 0) + "\n"
    raise InvariantFileError(f"unknown format {fmt!r}: expected 'yaml' or 'json'")


def _json(v: Any, depth: int) -> str:
    # Like json.dumps(indent=2), but lists of scalars stay on one line.
    pad, inner = "  " * depth, "  " * (depth + 1)
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {_json(x, depth + 1)}" for k, x in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(v, list):
        if all(not isinstance(x, (list, dict)) for x in v):
            return "[" + ", ".join(_json(x, depth) for x in v) + "]"
        return "[\n" + ",\n".join(inner + _json(x, depth + 1) for x in v) + "\n" + pad + "]"
    return json.dumps(v, ensure_ascii=False, allow_nan=False)


def dump(s: InvariantSet, path: Union[str, Path], fmt: Optional[str] = None) -> None:
    """Writes the set to `path` (format from the extension unless `fmt` is given),
    atomically (`write_atomic`)."""
    write_atomic(path, dumps(s, fmt or format_of(path)))


def write_atomic(path: Union[str, Path], text: str) -> None:
    """Writes `text` to `path` atomically: it goes to a temporary file in the same
    directory, which then replaces `path`, so a crash or a full disk leaves either the old
    file or the new one, never half of one (nor an empty one)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the mode a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
