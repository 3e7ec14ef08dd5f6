"""``facerec serve``: a real server on a loopback port, called with a real HTTP client (httpx).

A cheap model (random resnet18 at 64 px) keeps the suite fast; detection is off
(``detect=False``: the sample photos are treated as crops) except where it is the point.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from facerec.gallery.recognizer import FaceRecognizer
from facerec.service.app import create_app
from facerec.service.batching import MicroBatcher
from facerec.service.keys import KeyStore
from facerec.service.settings import ServiceSettings

MODEL = {"model": "resnet18", "pretrained": "none", "input_size": 64}


@contextlib.contextmanager
def serving(settings: ServiceSettings) -> Iterator[tuple[str, object]]:
    """Run the app with uvicorn in a thread on a free loopback port; yield (base URL, app)."""
    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", app
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def photo(sample_dir: Path, name: str, n: int) -> Path:
    return sample_dir / name / f"{name}_{n:04d}.jpg"


def files(*paths: Path, field: str = "files") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def png(size: tuple[int, int], colour: int = 128) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, str]:
    store = KeyStore(tmp_path_factory.mktemp("keys") / "keys.json")
    return {"path": str(store.path), "read": store.add("reader", "read"), "write": store.add("writer", "write")}


@pytest.fixture(scope="module")
def settings(tmp_path_factory, keys) -> ServiceSettings:
    return ServiceSettings(
        gallery=str(tmp_path_factory.mktemp("served") / "gallery"),
        **MODEL,
        detect=False,
        threshold=0.5,
        keys_file=keys["path"],
        max_upload_bytes=200_000,
        max_pixels=1_000_000,
        batch_wait_ms=20,
    )


@pytest.fixture(scope="module")
def server(settings):
    with serving(settings) as (url, app):
        yield url, app


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture()
def reader(server, keys) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], headers=bearer(keys["read"]), timeout=60) as client:
        yield client


@pytest.fixture()
def writer(server, keys) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], headers=bearer(keys["write"]), timeout=60) as client:
        yield client


def clear(writer: httpx.Client) -> None:
    for identity in writer.get("/v1/identities").json()["identities"]:
        assert writer.delete(f"/v1/identities/{identity['name']}").status_code == 200


# ------------------------------------------------------------------ endpoints
def test_healthz_needs_no_key_and_names_the_loaded_model(server):
    body = httpx.get(f"{server[0]}/healthz").json()
    assert body["status"] == "ok"
    assert body["model"].startswith("resnet18/64px/")


def test_openapi_docs_list_every_endpoint(server):
    assert httpx.get(f"{server[0]}/docs").status_code == 200
    paths = httpx.get(f"{server[0]}/openapi.json").json()["paths"]
    assert {
        "/v1/verify",
        "/v1/identify",
        "/v1/identities",
        "/v1/identities/{name}",
        "/v1/identities/{name}/faces",
    } <= set(paths)


def test_verify_answers_what_the_cli_answers(reader, sample_dir):
    a, b = photo(sample_dir, "Ashanti", 1), photo(sample_dir, "Ashanti", 2)
    response = reader.post("/v1/verify", files=files(a, field="file1") + files(b, field="file2"))
    assert response.status_code == 200, response.text
    body = response.json()
    with FaceRecognizer(MODEL["model"], pretrained="none", input_size=64, detect=False) as local:
        expected = local.verify(a, b, threshold=0.5).to_dict()
    assert set(body) == {*expected, "model"}
    assert body["score"] == pytest.approx(expected["score"], abs=1e-5)
    assert body["same"] == expected["same"]
    assert [f["image"] for f in body["faces"]] == [a.name, b.name]
    same = reader.post("/v1/verify", files=files(a, field="file1") + files(a, field="file2")).json()
    assert same["same"] is True and same["score"] == pytest.approx(1.0, abs=1e-5)


def test_enroll_list_show_identify_and_delete(writer, sample_dir):
    clear(writer)
    enrolled = writer.post(
        "/v1/identities/Ashanti/faces", files=files(photo(sample_dir, "Ashanti", 1), photo(sample_dir, "Ashanti", 2))
    )
    assert enrolled.status_code == 200, enrolled.text
    body = enrolled.json()
    assert body["added"] == 2 and body["identities"][0]["created"] is True
    writer.post("/v1/identities/Bob_Hope/faces", files=files(photo(sample_dir, "Bob_Hope", 1)))
    again = writer.post("/v1/identities/Ashanti/faces", files=files(photo(sample_dir, "Ashanti", 1))).json()
    assert again["added"] == 0 and again["skipped"] == 1  # the same photo is not stored twice

    listed = writer.get("/v1/identities").json()["identities"]
    assert [(i["name"], i["images"]) for i in listed] == [("Ashanti", 2), ("Bob_Hope", 1)]
    shown = writer.get("/v1/identities/Ashanti").json()
    assert len(shown["images"]) == 2 and shown["images"][0]["source"] == "upload:Ashanti_0001.jpg"

    found = writer.post("/v1/identify", files=files(photo(sample_dir, "Ashanti", 2), field="file"), data={"top_k": "2"})
    assert found.status_code == 200, found.text
    assert found.json()["identity"] == "Ashanti"
    assert [c["identity"] for c in found.json()["candidates"]] == ["Ashanti", "Bob_Hope"]

    removed = writer.delete("/v1/identities/Bob_Hope")
    assert removed.json() == {"removed": "Bob_Hope", "images": 1}
    assert writer.get("/v1/identities/Bob_Hope").status_code == 404
    assert writer.delete("/v1/identities/Bob_Hope").status_code == 404


def test_identify_on_an_empty_gallery_says_so(writer, sample_dir):
    clear(writer)
    response = writer.post("/v1/identify", files=files(photo(sample_dir, "Ashanti", 1), field="file"))
    assert response.status_code == 409
    assert "empty" in response.json()["error"]


def test_metrics_count_requests_and_time_them_by_route(reader, server):
    reader.get("/v1/identities")
    assert httpx.get(f"{server[0]}/metrics").status_code == 401
    text = reader.get("/metrics").text
    assert 'facerec_http_requests_total{method="GET",route="/v1/identities",status="200"}' in text
    assert 'facerec_http_request_seconds_bucket{le="0.1",method="GET",route="/v1/identities"}' in text
    assert 'facerec_batch_size_count{stage="embed"}' in text


# ------------------------------------------------------------------ auth
def test_requests_without_a_key_or_with_a_bad_key_are_refused(server, sample_dir):
    url = server[0]
    no_key = httpx.get(f"{url}/v1/identities")
    assert no_key.status_code == 401 and no_key.headers["www-authenticate"] == "Bearer"
    assert "Authorization" in no_key.json()["error"]
    assert httpx.get(f"{url}/v1/identities", headers=bearer("frk_not-a-key")).status_code == 401
    assert httpx.get(f"{url}/v1/identities", headers={"Authorization": "Basic abc"}).status_code == 401
    verify = httpx.post(f"{url}/v1/verify", files=files(photo(sample_dir, "Ashanti", 1), field="file1"))
    assert verify.status_code == 401  # before the body is even looked at


def test_a_read_key_cannot_enroll_or_delete(reader, sample_dir):
    enroll = reader.post("/v1/identities/Someone/faces", files=files(photo(sample_dir, "Ashanti", 3)))
    assert enroll.status_code == 403 and "write" in enroll.json()["error"]
    assert reader.delete("/v1/identities/Someone").status_code == 403


def test_a_removed_key_stops_working_without_a_restart(server, keys):
    store = KeyStore(keys["path"])
    temporary = store.add("temporary", "read")
    assert httpx.get(f"{server[0]}/v1/identities", headers=bearer(temporary)).status_code == 200
    store.remove("temporary")
    assert httpx.get(f"{server[0]}/v1/identities", headers=bearer(temporary)).status_code == 401


def test_without_keys_the_server_refuses_to_listen_beyond_loopback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "facerec", "serve", "--host", "0.0.0.0", "--gallery", str(tmp_path / "g")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0" in done.stderr and "Traceback" not in done.stderr


def test_a_model_that_cannot_load_stops_serve_with_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "facerec", "serve", "--gallery", str(tmp_path / "g"), "--model", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "is not a facerec model directory" in done.stderr and "Traceback" not in done.stderr


# ------------------------------------------------------------------ bad input
def test_bad_uploads_get_clear_4xx_json_errors(reader, sample_dir, tmp_path):
    good = files(photo(sample_dir, "Ashanti", 1), field="file1")
    cases = {
        "not an image": (("text.jpg", b"hello, not a jpeg", "image/jpeg"), 400, "not a readable image"),
        "empty": (("empty.jpg", b"", "image/jpeg"), 400, "empty"),
        "too big": (("big.png", b"\0" * 300_000, "image/png"), 413, "upload limit"),
        "bomb": (("bomb.png", png((2000, 1000)), "image/png"), 413, "megapixels"),
    }
    for case, (upload, status, words) in cases.items():
        response = reader.post("/v1/verify", files=[*good, ("file2", upload)])
        assert response.status_code == status, (case, response.text)
        assert words in response.json()["error"], case
        assert "Traceback" not in response.text
    missing = reader.post("/v1/verify", files=good)
    assert missing.status_code == 422 and "file2" in missing.json()["error"]
    bad_k = reader.post("/v1/identify", files=files(photo(sample_dir, "Ashanti", 1), field="file"), data={"top_k": "0"})
    assert bad_k.status_code == 422 and "top_k" in bad_k.json()["error"]


def test_a_body_declared_larger_than_the_limit_is_refused_before_it_is_read(server, settings, keys):
    # A raw socket: httpx will not send a Content-Length it does not mean to honour.
    limit = settings.max_upload_bytes * settings.max_files + (1 << 20)
    host, port = server[0].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(
            (
                f"POST /v1/verify HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {keys['read']}\r\n"
                f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {limit + 1}\r\n\r\n"
            ).encode()
        )
        answer = _read_http_response(conn)
    assert answer.startswith("HTTP/1.1 413")
    assert "exceeds" in answer


def _read_http_response(conn: socket.socket) -> str:
    """Head and body of one HTTP response: they may come in separate TCP segments."""
    data = b""
    while b"\r\n\r\n" not in data and (chunk := conn.recv(4096)):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    while len(body) < length and (chunk := conn.recv(4096)):
        body += chunk
    return (head + b"\r\n\r\n" + body).decode()


def test_an_unexpected_failure_is_a_500_without_a_traceback(server, reader, sample_dir, monkeypatch):
    engine = server[1].state.engine

    async def broken(*args, **kwargs):
        raise RuntimeError("secret detail /srv/internal/path")

    monkeypatch.setattr(engine, "verify", broken)
    response = reader.post(
        "/v1/verify",
        files=files(photo(sample_dir, "Ashanti", 1), field="file1")
        + files(photo(sample_dir, "Ashanti", 2), field="file2"),
    )
    assert response.status_code == 500
    assert response.json()["type"] == "InternalError"
    assert "secret" not in response.text and "Traceback" not in response.text


def test_a_request_over_the_time_limit_gets_a_504(settings, keys, sample_dir, tmp_path):
    slow = replace(settings, gallery=str(tmp_path / "gallery"), request_timeout_s=0.001, batch_wait_ms=50)
    with serving(slow) as (url, _):
        response = httpx.post(
            f"{url}/v1/verify",
            headers=bearer(keys["read"]),
            files=files(photo(sample_dir, "Ashanti", 1), field="file1")
            + files(photo(sample_dir, "Ashanti", 2), field="file2"),
        )
    assert response.status_code == 504 and "longer than" in response.json()["error"]


def test_an_invalid_identity_name_is_a_400(writer, sample_dir):
    response = writer.post("/v1/identities/%20/faces", files=files(photo(sample_dir, "Ashanti", 1)))
    assert response.status_code == 400 and "name" in response.json()["error"]


def test_a_photo_without_a_face_is_a_422_and_a_real_face_is_found(settings, keys, sample_dir, tmp_path):
    detecting = replace(settings, gallery=str(tmp_path / "gallery"), detect=True)
    with (
        serving(detecting) as (url, _),
        httpx.Client(base_url=url, headers=bearer(keys["read"]), timeout=120) as client,
    ):
        blank = client.post(
            "/v1/verify",
            files=[
                *files(photo(sample_dir, "Ashanti", 1), field="file1"),
                ("file2", ("wall.png", png((200, 200)), "image/png")),
            ],
        )
        assert blank.status_code == 422
        assert blank.json() == {"error": "no face found in wall.png", "type": "NoFaceError"}
        found = client.post(
            "/v1/verify",
            files=files(photo(sample_dir, "Ashanti", 1), field="file1")
            + files(photo(sample_dir, "Ashanti", 2), field="file2"),
        ).json()
        assert all(face["faces_found"] >= 1 and face["policy"] == "central" for face in found["faces"])


# ------------------------------------------------------------------ concurrency
def test_concurrent_enrollments_from_several_clients_through_two_workers_lose_nothing(
    settings, keys, sample_dir, tmp_path
):
    shared = replace(settings, gallery=str(tmp_path / "shared"))
    people = sorted(p.name for p in sample_dir.iterdir() if p.is_dir())[:12]
    with serving(shared) as (url1, _), serving(shared) as (url2, _):

        def enroll(i_name: tuple[int, str]) -> int:
            i, name = i_name
            with httpx.Client(base_url=(url1, url2)[i % 2], headers=bearer(keys["write"]), timeout=120) as client:
                response = client.post(
                    f"/v1/identities/{name}/faces", files=files(photo(sample_dir, name, 1), photo(sample_dir, name, 2))
                )
                return response.status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(enroll, enumerate(people)))
        assert statuses == [200] * len(people)
        for url in (url1, url2):  # each worker sees every enrollment, including the other's
            listed = httpx.get(f"{url}/v1/identities", headers=bearer(keys["read"])).json()["identities"]
            assert [(i["name"], i["images"]) for i in listed] == [(name, 2) for name in people]
        last = people[-1]
        found = httpx.post(
            f"{url1}/v1/identify", headers=bearer(keys["read"]), files=files(photo(sample_dir, last, 2), field="file")
        ).json()
        assert found["identity"] == last


def test_requests_arriving_together_are_embedded_as_one_batch():
    calls: list[int] = []

    def embed(crops):
        calls.append(len(crops))
        return np.array([[float(c)] for c in crops], dtype=np.float32)

    async def main(max_batch: int) -> list[np.ndarray]:
        batcher = MicroBatcher(embed, ThreadPoolExecutor(1), max_batch=max_batch, max_wait_s=0.05)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.run([i, i + 100]) for i in range(5)))
        finally:
            await batcher.stop()

    results = asyncio.run(main(max_batch=32))
    assert calls == [10]  # five requests, one model call
    assert [r[:, 0].tolist() for r in results] == [[i, i + 100] for i in range(5)]  # each gets its own vectors
    calls.clear()
    asyncio.run(main(max_batch=1))
    assert calls == [2] * 5  # batching off: one call per request


def test_a_failing_batch_fails_its_requests_and_the_batcher_goes_on():
    def embed(crops):
        if "bad" in crops:
            raise ValueError("cannot embed")
        return np.zeros((len(crops), 1), np.float32)

    async def main() -> None:
        batcher = MicroBatcher(embed, ThreadPoolExecutor(1), max_batch=32, max_wait_s=0.0)
        batcher.start()
        try:
            with pytest.raises(ValueError):
                await batcher.run(["bad"])
            assert (await batcher.run(["good"])).shape == (1, 1)
        finally:
            await batcher.stop()

    asyncio.run(main())
