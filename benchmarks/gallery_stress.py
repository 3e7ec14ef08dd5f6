"""Gallery stress: concurrent enrolling processes and SIGKILL in the middle of an enrollment.

    python benchmarks/gallery_stress.py [--data DIR] [--processes 4] [--per-process 10] [--kills 5]

1. ``--processes`` ``facerec enroll --from-dir`` processes enroll disjoint identity
   subsets of DIR (default: the embedded LFW sample) into ONE gallery at once;
   afterwards every identity must be there with all its photos and a fresh index.
2. ``--kills`` times, ``facerec enroll --from-dir`` is started on a fresh subset and
   killed with SIGKILL at a random moment after it has committed something; then the
   gallery must open, pass ``PRAGMA integrity_check``, hold every identity it held
   at the kill with all of its photos (no half identity), and answer a search whose
   top hit for an enrolled photo is that photo's identity (the index is rebuilt if
   the kill left it stale).
3. For each named fault point an enrollment passes through (``facerec.faults``: inside
   the transaction, after the commit, while the index file is saved, before its
   sidecar), ``facerec enroll --from-dir`` runs with ``FACEREC_FAULT`` set and dies
   by SIGKILL exactly there; the same checks follow.
Prints a JSON report and logs it to MLflow (experiment ``facerec-benchmarks``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from facerec import faults
from facerec.data.datasets import group_by_identity, read_identity_folder, sample_root
from facerec.gallery.gallery import DB_FILE, Gallery

log = logging.getLogger(__name__)

EXPERIMENT = "facerec-benchmarks"
MODEL = ["--model", "resnet18", "--pretrained", "none", "--input-size", "64"]
#: Fault points of ``enroll --from-dir`` and the visit to kill at: the 2nd identity's commit; the index
#: is written once, at the end of the run.
ENROLL_FAULTS = {"enroll-in-transaction": 2, "enroll-committed": 2, "index-save": 1, "index-sidecar": 1}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="identity folders (default: the embedded sample)")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--per-process", type=int, default=10, help="identities per concurrent process")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--per-kill", type=int, default=8, help="identities offered to each killed process")
    parser.add_argument("--no-fault-points", action="store_true", help="skip the kills at named fault points")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-mlflow", action="store_true")
    return parser.parse_args(argv)


def subset(groups: dict[str, list], names: list[str], root: Path) -> Path:
    """A folder of symlinks to the identity folders ``names`` (a disjoint subset to enroll)."""
    root.mkdir(parents=True)
    for name in names:
        (root / name).symlink_to(groups[name][0].path.parent, target_is_directory=True)
    return root


def enroll_cmd(folder: Path, gallery: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "facerec",
        "-q",
        "enroll",
        "--from-dir",
        str(folder),
        "--gallery",
        str(gallery),
        "--batch-size",
        "4",
        *MODEL,
        "--json",
    ]


def check(gallery: Path, groups: dict[str, list]) -> dict:
    """Integrity, completeness of every identity, and a search for one enrolled photo per identity."""
    with sqlite3.connect(gallery / DB_FILE) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    with Gallery(gallery) as g:
        present = {i["name"]: i["images"] for i in g.identities()}
        partial = sorted(n for n, count in present.items() if count != len(groups[n]))
        fresh_before = g.index_is_fresh()
        wrong = 0
        for name in present:
            vector = g.embeddings(name)[:1]
            wrong += g.search(vector, 1)[0][0].identity != name
        fresh_after = g.index_is_fresh()
    return {
        "integrity": integrity,
        "identities": len(present),
        "partial": partial,
        "search_errors": wrong,
        "index_fresh_before": fresh_before,
        "index_fresh_after": fresh_after,
        "present": present,
    }


def concurrent(groups, names, work: Path, args) -> dict:
    gallery = work / "concurrent"
    folders = [
        subset(groups, names[i * args.per_process : (i + 1) * args.per_process], work / f"part{i}")
        for i in range(args.processes)
    ]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(enroll_cmd(f, gallery), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for f in folders
    ]
    outputs = [p.communicate() for p in procs]
    seconds = time.perf_counter() - start
    codes = [p.returncode for p in procs]
    expected = set(names[: args.processes * args.per_process])
    state = check(gallery, groups)
    ok = (
        codes == [0] * len(procs)
        and set(state["present"]) == expected
        and not state["partial"]
        and state["integrity"] == "ok"
        and state["index_fresh_before"]
        and not state["search_errors"]
    )
    return {
        "ok": ok,
        "exit_codes": codes,
        "seconds": round(seconds, 1),
        "expected_identities": len(expected),
        "errors": [err.strip().splitlines()[-1] for (_, err), c in zip(outputs, codes) if c],
        **{k: v for k, v in state.items() if k != "present"},
    }


def committed(gallery: Path) -> int:
    if not (gallery / DB_FILE).is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{gallery / DB_FILE}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM identities").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def kills(groups, names, work: Path, args) -> list[dict]:
    rng = random.Random(args.seed)
    gallery = work / "killed"
    rounds = []
    for round_ in range(args.kills):
        chunk = names[round_ * args.per_kill : (round_ + 1) * args.per_kill]
        folder = subset(groups, chunk, work / f"kill{round_}")
        before = committed(gallery)
        proc = subprocess.Popen(enroll_cmd(folder, gallery), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        target = before + rng.randint(1, max(1, len(chunk) - 2))  # kill after this many identities
        deadline = time.monotonic() + 600
        while committed(gallery) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 1.0))  # land anywhere: embedding, transaction, index write
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        at_kill = committed(gallery)
        state = check(gallery, groups)
        ok = (
            state["integrity"] == "ok"
            and not state["partial"]
            and state["identities"] >= at_kill
            and not state["search_errors"]
        )
        rounds.append(
            {
                "round": round_,
                "ok": ok,
                "identities_at_kill": at_kill,
                "exit": proc.returncode,
                **{k: v for k, v in state.items() if k != "present"},
            }
        )
        log.info("kill %d: %s", round_, rounds[-1])
    return rounds


def fault_kills(groups, names, work: Path, args) -> list[dict]:
    """One enrollment per named fault point, SIGKILLed there; the gallery must come through whole."""
    gallery = work / "faults"
    rounds = []
    for round_, (point, visit) in enumerate(ENROLL_FAULTS.items()):
        chunk = names[round_ * args.per_kill : (round_ + 1) * args.per_kill]
        folder = subset(groups, chunk, work / f"fault{round_}")
        before = committed(gallery)
        env = {**os.environ, faults.ENV: f"{point}:{visit}"}
        done = subprocess.run(enroll_cmd(folder, gallery), env=env, capture_output=True, text=True)
        state = check(gallery, groups)
        # identities of this run that must have survived: those committed before the fatal point
        survivors = {"enroll-in-transaction": visit - 1, "enroll-committed": visit}.get(point, len(chunk))
        ok = (
            done.returncode == -signal.SIGKILL
            and state["identities"] == before + survivors
            and state["integrity"] == "ok"
            and not state["partial"]
            and not state["search_errors"]
            and state["index_fresh_after"]
        )
        state = {k: v for k, v in state.items() if k != "present"}
        rounds.append(
            {"point": point, "visit": visit, "ok": ok, "exit": done.returncode, "survivors": survivors, **state}
        )
        log.info("fault %s: %s", point, rounds[-1])
    return rounds


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    groups = group_by_identity(read_identity_folder(args.data or sample_root()))
    names = sorted(groups)
    needed = max(args.processes * args.per_process, max(args.kills, len(ENROLL_FAULTS)) * args.per_kill)
    if len(names) < needed:
        raise SystemExit(f"need {needed} identities, {args.data or sample_root()} has {len(names)}")
    with tempfile.TemporaryDirectory(prefix="facerec-stress-") as tmp:
        work = Path(tmp)
        report = {"concurrent": concurrent(groups, names, work, args), "kills": kills(groups, names, work, args)}
        report["fault_kills"] = [] if args.no_fault_points else fault_kills(groups, names, work, args)
    report["ok"] = report["concurrent"]["ok"] and all(r["ok"] for r in report["kills"] + report["fault_kills"])
    report["load_avg_1m"] = os.getloadavg()[0]
    print(json.dumps(report, indent=2))
    if not args.no_mlflow:
        import mlflow

        from facerec.tracking.runs import mlflow_run

        with mlflow_run(
            EXPERIMENT,
            "gallery-stress",
            params={k: str(v) for k, v in vars(args).items()},
            tags={"facerec.benchmark": "gallery_stress"},
        ):
            mlflow.log_metrics(
                {
                    "concurrent_ok": float(report["concurrent"]["ok"]),
                    "concurrent_seconds": report["concurrent"]["seconds"],
                    "kills_ok": float(sum(r["ok"] for r in report["kills"])),
                    "kills": float(len(report["kills"])),
                    "fault_kills_ok": float(sum(r["ok"] for r in report["fault_kills"])),
                    "fault_kills": float(len(report["fault_kills"])),
                }
            )
            mlflow.log_dict(report, "gallery_stress.json")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
