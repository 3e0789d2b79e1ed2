"""Credentials go where they should. HF_TOKEN goes to the Hub's own origin only: two HTTP servers
on 127.0.0.1 (different ports are different origins), the first redirecting reads to the second
as the Hub does to its CDN. gs:// takes an HMAC key and says so when offered a service account."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from ridgeline.storage import StorageError, open_store
from ridgeline.storage.hf import HFStore

TOKEN = "hf_secret_token"
PAYLOAD = b"0123456789" * 10


@dataclass
class Server:
    port: int
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _serve(routes: dict[str, tuple[int, dict[str, str], bytes]]) -> Iterator[Server]:
    """A server answering ``path -> (status, headers, body)``; records each request's headers."""
    state: list[Server] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            state[0].seen.append((self.path, dict(self.headers.items())))
            status, headers, body = routes.get(self.path, (404, {}, b""))
            rng = self.headers.get("Range")
            if status == 200 and rng:
                start, end = (int(x) for x in rng.removeprefix("bytes=").split("-"))
                body, status = body[start : end + 1], 206
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value.format(other=state[0].other))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server = Server(httpd.server_address[1])
    state.append(server)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def cdn() -> Iterator[Server]:
    yield from _serve({"/blob/model.safetensors": (200, {}, PAYLOAD)})


@pytest.fixture
def hub(cdn: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    listing = [{"type": "file", "path": "model.safetensors", "size": len(PAYLOAD), "oid": "x"}]
    cdn_url = f"{cdn.url}/blob/model.safetensors"
    routes = {
        "/api/models/org/m/tree/main?recursive=true": (200, {}, json.dumps(listing).encode()),
        # LFS files: the Hub answers with a redirect to a CDN on another host.
        "/org/m/resolve/main/model.safetensors": (302, {"Location": cdn_url}, b""),
        # A renamed file: a redirect on the Hub's own origin.
        "/org/m/resolve/main/old.json": (301, {"Location": "/org/m/resolve/main/new.json"}, b""),
        "/org/m/resolve/main/new.json": (200, {}, b"{}"),
    }
    for server in _serve(routes):
        server.other = cdn  # type: ignore[attr-defined]
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield server


def _auth(headers: dict[str, str]) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == "authorization"), None)


def test_token_is_not_sent_to_another_origin_after_a_redirect(hub: Server, cdn: Server) -> None:
    store = HFStore("org/m", "main")
    assert store.read_range("model.safetensors", 10, 20) == PAYLOAD[10:30]
    assert [_auth(h) for _, h in hub.seen] == [f"Bearer {TOKEN}"]
    path, headers = cdn.seen[0]
    assert path == "/blob/model.safetensors"
    assert _auth(headers) is None
    assert headers.get("Range") == "bytes=10-29"  # the redirected read is still ranged


def test_token_follows_a_redirect_on_the_same_origin(hub: Server, cdn: Server) -> None:
    assert HFStore("org/m", "main").read("old.json") == b"{}"
    assert [(p, _auth(h)) for p, h in hub.seen] == [
        ("/org/m/resolve/main/old.json", f"Bearer {TOKEN}"),
        ("/org/m/resolve/main/new.json", f"Bearer {TOKEN}"),
    ]
    assert not cdn.seen


def test_gs_with_only_a_service_account_key_says_what_to_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS_JSON", '{"type": "service_account"}')
    with pytest.raises(
        StorageError,
        match=r"GOOGLE_APPLICATION_CREDENTIALS_JSON .* is not supported: create an HMAC",
    ):
        open_store("gs://bucket/model")


def test_gs_with_an_hmac_key_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "GOOG1EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/var/run/sa.json")
    assert open_store("gs://bucket/model").root_uri == "gs://bucket/model"


def test_the_crd_documents_only_credentials_that_are_read() -> None:
    from ridgeline.api.inference_model import ModelSource

    text = ModelSource.model_fields["credentials_secret"].description or ""
    assert "HMAC" in text
    assert "service-account JSON keys are not supported" in text
