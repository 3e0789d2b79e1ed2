"""The operator's own API calls: they give up on a server that stops answering, instead of
holding the model's wake-up daemon (and every later wake and resync of that model) forever;
a status write is conditional on the resourceVersion read (a 409 is its own error); the
start-up list of nodes is read as plain JSON."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator

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


def _api(host: str) -> client.ApiClient:
    """A client of the API server at ``host`` that does not retry (each test says what answers)."""
    configuration = client.Configuration()
    configuration.host = host
    configuration.retries = 0
    return client.ApiClient(configuration)


@contextlib.contextmanager
def _json_server(
    answer: Callable[[], tuple[int, object]],
) -> Iterator[tuple[client.ApiClient, list[tuple[str, str, str | None, bytes]]]]:
    """An API server on loopback answering every request with ``answer()`` (code, JSON body);
    yields a client of it and the requests it got: (method, path, Content-Type, body)."""
    requests: list[tuple[str, str, str | None, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            sent = self.rfile.read(length)
            requests.append((self.command, self.path, self.headers["Content-Type"], sent))
            code, obj = answer()
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._serve()

        def do_PATCH(self) -> None:
            self._serve()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield _api(f"http://127.0.0.1:{server.server_address[1]}"), requests
    finally:
        server.shutdown()
        server.server_close()


def test_a_status_write_to_a_silent_api_server_gives_up(
    silent_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kube, "REQUEST_TIMEOUT_S", (1.0, 1.0))
    api = _api(silent_server)
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
    listing = {"kind": "NodeList", "apiVersion": "v1", "items": [node]}
    with _json_server(lambda: (200, listing)) as (api, requests):
        nodes = kube.list_nodes(api, "nvidia.com/gpu.product")
    assert nodes == [node]
    assert type(nodes[0]) is dict
    assert [urllib.parse.unquote(path) for _, path, _, _ in requests] == [
        "/api/v1/nodes?labelSelector=nvidia.com/gpu.product"
    ]


def test_a_status_write_is_conditional_and_a_409_says_the_object_changed() -> None:
    answers = [409, 200, 503]

    def answer() -> tuple[int, object]:
        code = answers.pop(0)
        if code == 200:  # the object as written
            return code, {"metadata": {"name": "m", "resourceVersion": "8"}}
        return code, {"kind": "Status", "code": code}

    args = ("ridgeline.dev", "v1alpha1", "inferencemodels", "ns", "m", "7", {"x": 1})
    with _json_server(answer) as (api, requests):
        with pytest.raises(kube.ConflictError):
            kube.patch_status(api, *args)
        assert kube.patch_status(api, *args) == "8"  # the version the write made
        with pytest.raises(kopf.TemporaryError):  # load: retried after its delay
            kube.patch_status(api, *args)
    method, path, content_type, body = requests[0]
    assert (method, path) == (
        "PATCH",
        "/apis/ridgeline.dev/v1alpha1/namespaces/ns/inferencemodels/m/status",
    )
    assert content_type == "application/merge-patch+json"
    assert json.loads(body) == {"metadata": {"resourceVersion": "7"}, "status": {"x": 1}}
