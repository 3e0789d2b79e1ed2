"""The harness's servers (KubeRay, MinIO) are up only once their health endpoint answers, and a
port taken between ``free_port``'s pick and the server's bind starts it again on fresh ports
instead of leaving the cluster without it; any other exit is an error with the server's log."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ridgeline_dev.cluster import free_port
from ridgeline_dev.servers import ATTEMPTS, ServerError, start_on_free_ports

# Serves 200 on its port, or says what Go's net package says when the port is taken.
SERVER = """
import http.server, sys
port = int(sys.argv[1])
if len(sys.argv) > 2:
    print(sys.argv[2], flush=True)
    sys.exit(3)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
try:
    server = http.server.HTTPServer(("127.0.0.1", port), Handler)
except OSError as exc:
    print(f"listen tcp 127.0.0.1:{port}: bind: {exc.strerror.lower()}", flush=True)
    sys.exit(1)
server.serve_forever()
"""


class Harness:
    def __init__(self, log: Path, picks: list[int], fail_with: str | None = None) -> None:
        self.log = log
        self.picks = picks
        self.fail_with = fail_with
        self.procs: list[subprocess.Popen[bytes]] = []

    def pick(self) -> int:
        return self.picks.pop(0) if self.picks else free_port()

    def start(self, ports: dict[str, int]) -> None:
        argv = [sys.executable, "-c", SERVER, str(ports["http"])]
        if self.fail_with:
            argv.append(self.fail_with)
        with self.log.open("ab") as out:
            self.procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT))

    def alive(self) -> bool:
        return self.procs[-1].poll() is None

    def run(self) -> dict[str, int]:
        return start_on_free_ports(
            "server", ("http",), self.pick, self.start, self.alive, _answers, self.log
        )


def _answers(ports: dict[str, int]) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.fixture
def taken() -> Iterator[int]:
    """A port another process holds."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@contextmanager
def _harness(tmp_path: Path, picks: list[int], fail_with: str | None = None) -> Iterator[Harness]:
    harness = Harness(tmp_path / "server.log", picks, fail_with)
    try:
        yield harness
    finally:
        for proc in harness.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def test_a_taken_port_starts_the_server_again_on_a_fresh_one(tmp_path: Path, taken: int) -> None:
    with _harness(tmp_path, [taken]) as harness:
        ports = harness.run()
        assert ports["http"] != taken
        assert _answers(ports)
        assert len(harness.procs) == 2
        assert "address already in use" in harness.log.read_text()


def test_a_port_taken_every_time_is_an_error(tmp_path: Path, taken: int) -> None:
    with _harness(tmp_path, [taken] * ATTEMPTS) as harness:
        with pytest.raises(ServerError, match=f"attempt {ATTEMPTS}"):
            harness.run()
        assert len(harness.procs) == ATTEMPTS


def test_another_exit_is_an_error_with_its_log(tmp_path: Path) -> None:
    with _harness(tmp_path, [], fail_with="no kubeconfig") as harness:
        with pytest.raises(ServerError, match="no kubeconfig"):
            harness.run()
        assert len(harness.procs) == 1
