"""Check the MLflow UI as a user sees it: a real ``mlflow server`` over a store made by a small benchmark.

1. Makes a tracking store (sqlite + artifacts in ``--store``) with the quick benchmark on the
   embedded sample, two backbones at 32 px and two training steps each (about a minute),
   unless the store already holds it.
2. Starts ``mlflow server`` on a free loopback port over that store.
3. Asserts through the REST API that the parent run and its child runs, their headline
   metrics, their dataset inputs (training / validation / evaluation), the comparison
   artifacts and the registered model with its alias are there (a logged pyfunc model).
4. Where Chromium is installed (Debian package ``chromium``), saves screenshots of the
   experiment list, the parent run's artifacts (the comparison chart), the model page and
   the experiment's chart view (headless; skipped otherwise).

    python benchmarks/ui_check.py [--store DIR] [--screenshots DIR] [--keep-serving]

Prints one JSON line: what was checked, the URLs and the screenshot files.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "facerec-benchmark"
#: The quick benchmark shrunk to its machinery: two backbones at 32 px, raw photos, two steps each.
SMALL_RUN = [
    "models=[{name: resnet18, input_size: 32}, {name: mobilenet_v3_large, input_size: 32}]",
    "evaluate.crop=false",
    "evaluate.holdout=0.2",
    "train.data.val_fraction=0.2",
    "train.epochs=1",
    "train.steps_per_epoch=2",
    "train.batch_size=4",
    "train.num_workers=0",
    "evaluate.num_workers=0",
    "evaluate.projection=pca",
]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def store_uri(store: Path) -> str:
    return f"sqlite:///{(store / 'mlflow.db').resolve()}"


def make_store(store: Path, progress: bool = False) -> dict[str, Any]:
    """Run the small benchmark into ``store`` (working directory ``store``); returns its summary."""
    from facerec.model_benchmark import load_benchmark_config, run_benchmark, summary

    store.mkdir(parents=True, exist_ok=True)
    previous_cwd, previous_uri = Path.cwd(), os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = store_uri(store)
    try:
        os.chdir(store)
        config = load_benchmark_config(ROOT / "experiments" / "quick.yaml", SMALL_RUN)
        return summary(run_benchmark(config, progress=progress))
    finally:
        os.chdir(previous_cwd)
        if previous_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_uri


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(store: Path, port: int | None = None, timeout: float = 180) -> Iterator[str]:
    """``mlflow server`` over ``store`` on a loopback port; yields its base URL, stops it after."""
    port = port or free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store_uri(store)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = open(store / "server.log", "wb")  # noqa: SIM115 - closed in finally
    server = subprocess.Popen(command, cwd=store, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(store / 'server.log').read_text()[-1500:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not answer on {url} within {timeout:.0f} s")
            time.sleep(1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


# ------------------------------------------------------------------------ REST
def _api(client: httpx.Client, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    response = client.request(method, f"/api/2.0/mlflow/{path}", timeout=30, **kwargs)
    if response.status_code != 200:
        raise AssertionError(f"{method} {path}: HTTP {response.status_code} {response.text[:300]}")
    return response.json()


def check_rest(url: str, model_name: str = "facerec-quick", alias: str = "champion") -> dict[str, Any]:
    """Assert what the UI shows, through the REST API the UI itself calls; returns ids for the screenshots."""
    from facerec.tracking.compare import CHART_DIR, HEADLINE_METRICS, TABLE_DIR

    with httpx.Client(base_url=url) as client:
        experiment = _api(client, "GET", "experiments/get-by-name", params={"experiment_name": EXPERIMENT})
        experiment_id = experiment["experiment"]["experiment_id"]
        runs = _api(client, "POST", "runs/search", json={"experiment_ids": [experiment_id], "max_results": 100})
        runs = runs.get("runs", [])
        tags = {r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs}
        parents = [r for r in runs if "mlflow.parentRunId" not in tags[r["info"]["run_id"]]]
        assert parents, "no benchmark parent run"
        parent = max(parents, key=lambda r: r["info"]["start_time"])
        parent_id = parent["info"]["run_id"]
        assert parent["info"]["run_name"].startswith("benchmark "), parent["info"]["run_name"]
        children = [r for r in runs if tags[r["info"]["run_id"]].get("mlflow.parentRunId") == parent_id]
        assert len(children) >= 2, f"parent {parent_id} has {len(children)} child runs"

        headline = {key for key, _, _ in HEADLINE_METRICS}
        for child in children:
            run_id = child["info"]["run_id"]
            full = _api(client, "GET", "runs/get", params={"run_id": run_id})["run"]
            assert child["info"]["status"] == "FINISHED", run_id
            metrics = {m["key"] for m in full["data"].get("metrics", [])}
            assert headline <= metrics, f"{run_id} lacks {sorted(headline - metrics)}"
            contexts = {
                t["value"]
                for i in full.get("inputs", {}).get("dataset_inputs", [])
                for t in i.get("tags", [])
                if t["key"] == "mlflow.data.context"
            }
            assert {"training", "validation", "evaluation"} <= contexts, f"{run_id} inputs: {sorted(contexts)}"

        def listed(path: str) -> set[str]:
            answer = _api(client, "GET", "artifacts/list", params={"run_id": parent_id, "path": path})
            return {f["path"] for f in answer.get("files", [])}

        charts = listed(CHART_DIR)
        assert {f"{CHART_DIR}/{key}.png" for key in ("accuracy", "auc", "train_minutes", "images_per_s")} <= charts
        assert {f"{TABLE_DIR}/results.md", f"{TABLE_DIR}/results.html"} <= listed(TABLE_DIR)

        model = _api(client, "GET", "registered-models/get", params={"name": model_name})["registered_model"]
        aliases = {a["alias"]: a["version"] for a in model.get("aliases", [])}
        assert alias in aliases, f"{model_name} has aliases {aliases}"
        version = _api(client, "GET", "registered-models/alias", params={"name": model_name, "alias": alias})
        source = version["model_version"]["source"]
        assert source.startswith("models:/m-"), f"@{alias} source {source} is not a logged (pyfunc) model"
    return {
        "experiment_id": experiment_id,
        "parent_run_id": parent_id,
        "child_run_ids": [c["info"]["run_id"] for c in children],
        "model": model_name,
        "alias": alias,
        "version": aliases[alias],
        "source": source,
    }


# ------------------------------------------------------------------ screenshots
def chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def screenshot(browser: str, url: str, out: Path, size: tuple[int, int] = (1700, 950), wait_ms: int = 20000) -> Path:
    """One headless Chromium screenshot of ``url`` (the single-page app gets ``wait_ms`` of virtual time).

    Chromium runs in its own process group, killed as a whole if it hangs (renderer processes included).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        command = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"]
        command += [f"--virtual-time-budget={wait_ms}", f"--timeout={wait_ms + 30000}", f"--screenshot={out}", url]
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise RuntimeError(f"chromium hung on {url}") from None
    if not out.is_file():
        raise RuntimeError(f"chromium wrote no screenshot for {url}")
    return out


def ui_pages(url: str, ids: dict[str, Any]) -> dict[str, str]:
    """The pages to look at: ``{file name: URL}`` (the UI's hash routes)."""
    exp, run = ids["experiment_id"], ids["parent_run_id"]
    runs = quote(json.dumps(ids["child_run_ids"]))
    return {
        "experiments.png": f"{url}/#/experiments/{exp}/runs",
        "benchmark-artifacts.png": f"{url}/#/experiments/{exp}/runs/{run}/artifacts/compare/accuracy.png",
        "model.png": f"{url}/#/models/{ids['model']}",
        # "Compare" of the child runs (one per model): metrics side by side, scatter/parallel plots.
        "compare-runs.png": f"{url}/#/compare-runs?runs={runs}&experiments={quote(json.dumps([exp]))}",
    }


def take_screenshots(url: str, ids: dict[str, Any], out_dir: Path) -> list[str]:
    browser = chromium()
    if browser is None:
        return []
    shots = []
    for name, page in ui_pages(url, ids).items():
        for attempt in (1, 2):  # a loaded machine sometimes stalls headless Chromium: one retry
            try:
                shots.append(str(screenshot(browser, page, out_dir / name)))
                break
            except RuntimeError as exc:
                print(f"screenshot {name}, attempt {attempt}: {exc}", file=sys.stderr)
    return shots


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=None, help="store folder (default: a temporary one)")
    parser.add_argument("--screenshots", type=Path, default=None, help="folder for the PNGs (default: <store>/ui)")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--keep-serving", action="store_true", help="leave the server up until Ctrl-C")
    args = parser.parse_args(argv)

    with contextlib.ExitStack() as stack:
        store = args.store or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="facerec-ui-")))
        store = store.resolve()
        made = None
        if not (store / "mlflow.db").is_file():
            made = make_store(store, progress=True)
        url = stack.enter_context(mlflow_server(store, args.port))
        ids = check_rest(url)
        shots = take_screenshots(url, ids, (args.screenshots or store / "ui").resolve())
        report = {"url": url, "store": str(store), **ids, "screenshots": shots, "chromium": chromium() is not None}
        if made:
            report["benchmark_seconds"] = made["seconds"]
        print(json.dumps(report))
        if args.keep_serving:
            with contextlib.suppress(KeyboardInterrupt):
                print(f"serving {url} (Ctrl-C stops)", file=sys.stderr)
                while True:
                    time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
