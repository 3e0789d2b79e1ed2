"""The operator's own API calls: they give up on a server that stops answering, instead of
holding the model's wake-up daemon (and every later wake and resync of that model) forever;
a status write is conditional on the resourceVersion read (a 409 is its own error); the
start-up list of nodes is read as plain JSON."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator

import kopf
import pytest
from kubernetes import client

from ridgeline_operator import kube


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers (a connection a proxy or NAT dropped silently)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_status_write_to_a_silent_api_server_gives_up(
    silent_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kube, "REQUEST_TIMEOUT_S", (1.0, 1.0))
    configuration = client.Configuration()
    configuration.host = silent_server
    configuration.retries = 0
    api = client.ApiClient(configuration)
    outcome: list[BaseException | None] = []

    def write() -> None:
        try:
            kube.patch_status(
                api, "ridgeline.dev", "v1alpha1", "inferencemodels", "ns", "m", "7", {}
            )
            outcome.append(None)
        except Exception as exc:
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    thread.join(timeout=15)
    assert not thread.is_alive(), "the status write is still waiting on a silent server"
    assert outcome
    assert outcome[0] is not None
    assert time.monotonic() - started < 15


def test_nodes_are_listed_as_plain_api_dicts_with_the_selector() -> None:
    """Start-up reads the GPU nodes as JSON (the client's model objects would set the
    operator's peak memory with a thousand nodes), filtered by the API server."""
    node = {
        "metadata": {"name": "gpu-0", "labels": {"nvidia.com/gpu.product": "NVIDIA-L4"}},
        "spec": {"unschedulable": False},
        "status": {"allocatable": {"nvidia.com/gpu": "1", "cpu": "8"}},
    }
    paths: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            body = json.dumps({"kind": "NodeList", "apiVersion": "v1", "items": [node]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
        nodes = kube.list_nodes(client.ApiClient(configuration), "nvidia.com/gpu.product")
    finally:
        server.shutdown()
        server.server_close()
    assert nodes == [node]
    assert type(nodes[0]) is dict
    assert [urllib.parse.unquote(p) for p in paths] == [
        "/api/v1/nodes?labelSelector=nvidia.com/gpu.product"
    ]


def test_a_status_write_is_conditional_and_a_409_says_the_object_changed() -> None:
    sent: list[tuple[str, str, dict[str, object]]] = []
    answers = [409, 200, 503]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PATCH(self) -> None:
            length = int(self.headers["Content-Length"])
            sent.append(
                (self.path, self.headers["Content-Type"], json.loads(self.rfile.read(length)))
            )
            code = answers.pop(0)
            body = json.dumps({"kind": "Status", "code": code}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    configuration.retries = 0
    api = client.ApiClient(configuration)
    args = ("ridgeline.dev", "v1alpha1", "inferencemodels", "ns", "m", "7", {"x": 1})
    try:
        with pytest.raises(kube.ConflictError):
            kube.patch_status(api, *args)
        kube.patch_status(api, *args)
        with pytest.raises(kopf.TemporaryError):  # load: retried after its delay
            kube.patch_status(api, *args)
    finally:
        server.shutdown()
        server.server_close()
    path, content_type, body = sent[0]
    assert path == "/apis/ridgeline.dev/v1alpha1/namespaces/ns/inferencemodels/m/status"
    assert content_type == "application/merge-patch+json"
    assert body == {"metadata": {"resourceVersion": "7"}, "status": {"x": 1}}
