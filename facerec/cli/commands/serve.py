"""Serve the recognizer as a REST API (FastAPI + uvicorn): verify, identify, enroll, list, show, delete.

Every request needs 'Authorization: Bearer KEY' (make keys with 'facerec keys add');
with no key configured the server only listens on a loopback address. The model loads
once per worker; OpenAPI docs at /docs, Prometheus metrics at /metrics.
"""

from __future__ import annotations

import argparse
import ipaddress

from facerec.cli.commands._recognition import (
    add_face_arguments,
    add_gallery_argument,
    add_gallery_model_arguments,
    add_threshold_argument,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="processes, each with its own model")
    parser.add_argument("--keys", metavar="FILE", default=None, help="API keys file [beside the gallery]")
    parser.add_argument("--max-upload-mb", type=float, default=10.0, help="largest image upload")
    parser.add_argument("--max-files", type=int, default=64, help="most photos in one enrollment request")
    parser.add_argument("--max-megapixels", type=float, default=40.0, help="largest image an upload may declare")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request time limit in seconds")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a request waits to share a batch")
    parser.add_argument(
        "--max-batch",
        type=int,
        default=32,
        help="photos per detection batch and crops per embedding batch (1: no micro-batching)",
    )
    parser.add_argument("--detect-threads", type=int, default=2, help="threads decoding uploads and cropping faces")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch threads per worker")
    add_threshold_argument(parser)
    add_gallery_argument(parser)
    add_face_arguments(parser)
    add_gallery_model_arguments(parser)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def settings_from_args(args: argparse.Namespace):  # -> ServiceSettings
    from facerec.gallery.gallery import default_gallery_dir
    from facerec.service.settings import ServiceSettings

    gallery = args.gallery or str(default_gallery_dir())
    # Flags name the model; unset, FaceRecognizer resolves it (the gallery's model, else
    # $FACEREC_MODEL, else dlib-resnet: facerec.models.resolve), as the other gallery commands do.
    model = {"model": args.model, "pretrained": args.pretrained, "input_size": args.input_size}
    return ServiceSettings(
        gallery=gallery,
        model=model["model"],
        pretrained=model["pretrained"],
        input_size=model["input_size"],
        device=args.device,
        face=args.face,
        detect=args.detect,
        threshold=args.threshold,
        keys_file=args.keys,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_files=args.max_files,
        max_pixels=int(args.max_megapixels * 1e6),
        request_timeout_s=args.timeout,
        batch_wait_ms=args.batch_wait_ms,
        max_batch=args.max_batch,
        detect_threads=args.detect_threads,
        torch_threads=args.torch_threads,
    )


def run(args: argparse.Namespace) -> int:
    import os
    import shutil
    import tempfile

    import uvicorn

    from facerec.errors import FacerecError
    from facerec.service.app import create_app
    from facerec.service.engine import Engine
    from facerec.service.keys import KeyStore, default_keys_path
    from facerec.service.settings import SETTINGS_ENV

    settings = settings_from_args(args)
    keys = KeyStore(settings.keys_file or default_keys_path(settings.gallery_path))
    if not keys.configured() and not is_loopback(args.host):
        raise FacerecError(
            f"no API keys in {keys.path}: refusing to listen on {args.host} without authentication; "
            "add one with 'facerec keys add NAME --role write' or serve on 127.0.0.1"
        )
    if args.workers < 1:
        raise FacerecError("--workers must be at least 1")
    log_level = "debug" if args.verbose else "warning" if args.quiet else "info"
    options = {"host": args.host, "port": args.port, "log_level": log_level, "timeout_graceful_shutdown": 10}
    if args.workers == 1:
        app = create_app(settings)
        app.state.engine.load()  # here, so that a bad model or gallery is a one-line error
        uvicorn.run(app, **options)
        return 0
    preflight = Engine(settings)  # the same one-line errors before any worker starts; then freed
    try:
        preflight.load()
    finally:
        preflight.close()
    del preflight
    os.environ[SETTINGS_ENV] = settings.to_env()
    scratch = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # one metrics view over every worker
        scratch = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="facerec-metrics-")
    try:
        uvicorn.run("facerec.service.app:app_from_env", factory=True, workers=args.workers, **options)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0
