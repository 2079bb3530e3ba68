"""Two nodes on one machine against one node, on every variant of corpus/ddp_mlp
(docs/distributed.md, "Beyond one node").

    python benchmarks/ddp_nodes.py [--steps 30] [--runs 3] [--dir DIR]

Learns the reference once with the single-node launcher (`invar infer --nproc-per-node 2`)
and once on two "nodes" (two torchrun launches, --nnodes 2, c10d rendezvous on 127.0.0.1,
one rank and one store each), then checks every variant both ways against the same
invariant file. Prints, per variant, both verdicts (exit status, violated invariants with
their steps and ranks) and whether they are equal; and what the gather cost: the bytes rank
1 sent, per observed step, and the seconds the gather took on each rank (packing, sending,
and on rank 0 writing into its store).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from invariants import invfile  # noqa: E402

CASE = ROOT / "corpus" / "ddp_mlp"
SENT = re.compile(r"rank 1 sent (\d+) bytes to rank 0 \((\d+) observations, (\d+) observed steps\) in ([\d.]+) s")
GATHERED = re.compile(r"gathered \d+ run\(s\) from \d+ other rank\(s\) in ([\d.]+) s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(d: Path, verb: str, *args: str, timeout: float = 240,
              env: Optional[Dict[str, str]] = None) -> Tuple[int, str, str, str]:
    """`torchrun --nnodes 2 ... -m invariants.cli VERB --store d/nodeN ARGS` once per node, one
    rank each; (the exit status of rank 0's torchrun, rank 0's stdout, its node's stderr, the
    other node's stderr). torchrun exits 0, or 1 when a rank of its node exited non-zero
    (rank 0's own status is in the stderr: `(exitcode: 3) local_rank: 0`).

    Node 0 hosts the rendezvous (is_host): on one machine both nodes match the endpoint,
    and when the other node hosted it, that node's torchrun agent would wait out its exit
    barrier (300 s) after rank 0's exit 1, which torchrun counts as a failed worker.
    `env`: more environment variables. TimeoutError (with both nodes' stderr) when the
    launch does not end in `timeout` s."""
    port, job = _free_port(), "job-" + uuid.uuid4().hex[:8]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **(env or {}))
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
               "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
               "--rdzv-id", job, "--rdzv-conf", f"is_host={int(node == 0)}",
               "-m", "invariants.cli", verb, "--store", str(d / f"node{node}"), *args]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    try:
        done = [p.communicate(timeout=timeout) for p in procs]
    except subprocess.TimeoutExpired as e:
        for p in procs:
            p.kill()
        raise TimeoutError("two-node launch hung:\n" + "\n".join(p.communicate()[1][-3000:] for p in procs)) from e
    # The c10d rendezvous, not --node-rank, decides which node holds rank 0: the one that gathered.
    first = next((i for i, (_, e) in enumerate(done) if "gathering the traces" in e), None)
    if first is None:
        raise RuntimeError("no rank 0 gathered:\n" + "\n".join(e[-3000:] for _, e in done))
    return procs[first].returncode, done[first][0], done[first][1], done[1 - first][1]


def verdict(code: int, out: str) -> Dict[str, Any]:
    """What a check's JSON report decided: exit status, crash, steps, violations (id, step, ranks)."""
    doc = json.loads(out)
    return {"exit": code, "crash": doc["summary"]["crash"], "steps": doc["summary"]["steps"],
            "violations": sorted((v["id"], v["step"], tuple(v.get("ranks") or ())) for v in doc["violations"]),
            "causes": [c["family"] for c in doc["causes"]]}


def _invar(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "invariants.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def variants() -> List[str]:
    return sorted(p.name for p in CASE.glob("*.py") if p.name.startswith(("bug_", "ok_")))


def main(argv: Sequence[str] = ()) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=None, help="Work directory [default: a temporary one].")
    a = ap.parse_args(list(argv) or None)
    work = Path(a.dir or tempfile.mkdtemp(prefix="invar-nodes-"))
    work.mkdir(parents=True, exist_ok=True)
    ref = str(CASE / "reference.py")
    learn = ["--runs", str(a.runs), "--steps", str(a.steps)]
    r = _invar("infer", "--nproc-per-node", "2", ref, *learn, "-o", str(work / "one.yaml"), "--store",
               str(work / "one"))
    assert r.returncode == 0, r.stderr[-3000:]
    code, _, err0, _ = two_nodes(work / "infer", "infer", ref, *learn, "-o", str(work / "two.yaml"))
    assert code == 0, err0[-3000:]
    same = _ids(work / "one.yaml") == _ids(work / "two.yaml")
    print(f"infer: {len(_ids(work / 'two.yaml'))} invariants on two nodes, the same ids, templates and severities "
          f"as on one node: {same}  ({_gather_cost(err0)})", flush=True)
    against = str(work / "two.yaml")
    print(f"{'variant':<22} {'one node':<34} {'two nodes':<34} equal  {'bytes':>6} {'B/step':>6} "
          f"{'rank1 s':>7} {'rank0 s':>7} {'wall 1n':>7} {'wall 2n':>7}")
    for script in variants():
        t = time.monotonic()
        r = _invar("check", str(CASE / script), "--against", against, "--store", str(work / "one"),
                   "--format", "json")
        wall1, one = time.monotonic() - t, verdict(r.returncode, r.stdout)
        t = time.monotonic()
        code, out, err0, err1 = two_nodes(work / script, "check", str(CASE / script), "--against", against,
                                          "--format", "json")
        wall2, two = time.monotonic() - t, verdict(code, out)
        sent = SENT.search(err1)
        gathered = GATHERED.search(err0)
        size, steps = (int(sent.group(1)), int(sent.group(3))) if sent else (0, 0)
        print(f"{script:<22} {_short(one):<34} {_short(two):<34} {str(one == two):<6} {size:>6} "
              f"{size / max(steps, 1):>6.0f} {sent.group(4) if sent else '-':>7} "
              f"{gathered.group(1) if gathered else '-':>7} {wall1:>7.1f} {wall2:>7.1f}", flush=True)


def _ids(path: Path) -> Dict[str, Tuple[str, str]]:
    return {i.id: (i.template, i.severity) for i in invfile.load(str(path)).invariants}


def _short(v: Dict[str, Any]) -> str:
    fams = ",".join(dict.fromkeys(v["causes"]))[:22]
    return f"exit {v['exit']}, {len(v['violations'])} viol. {fams}"


def _gather_cost(err0: str) -> str:
    g = GATHERED.search(err0)
    return f"rank 0's gather {g.group(1)} s" if g else "no gather line"


if __name__ == "__main__":
    main(sys.argv[1:])
