"""Ray Serve apps in a process of their own, for the serving tests.

The test process never starts Ray itself. Starting and shutting Ray down twice in one process
leaves the first session's native threads pointing at freed core-worker state, and the process
can segfault at exit after every test has passed (ray-project/ray#31145; CI saw exactly that).
A child per set of apps keeps Ray's lifetime equal to a process's.

The child prints one line, `READY {json}`, once every app is running, then serves until its
stdin closes (the parent is done or gone: no Ray is left behind) or it gets SIGTERM.
"""

from __future__ import annotations

import importlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ridgeline_dev.cluster import free_port

READY = "READY "
# An app's args may name another app builder ("module:function") under this key: test apps.
BUILDER = "ridgeline_dev.builder"
START_TIMEOUT_S = 300.0
START_ATTEMPTS = 3


@contextmanager
def serve_apps(apps: dict[str, tuple[str, dict[str, Any]]]) -> Iterator[dict[str, str]]:
    """Run the apps (name: route prefix, ServingArgs as a dict) on local Ray in a child process;
    yields the HTTP base URL, the Prometheus metrics URL and Ray's log folder."""
    proc, urls = _start(apps)
    try:
        yield urls
    finally:
        _stop(proc)


def _start(
    apps: dict[str, tuple[str, dict[str, Any]]],
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """The child, once its apps run. A port from ``free_port`` is free when chosen, not when
    Ray binds it, and Ray starts a dozen processes on ports of their own meanwhile: once here
    Ray's metrics agent found its port taken (Errno 98) and the raylet died with it. So a
    start that fails is tried again on fresh ports, and the error keeps every attempt's."""
    failures = []
    for _ in range(START_ATTEMPTS):
        spec = {"apps": apps, "http_port": free_port(), "metrics_port": free_port()}
        with tempfile.TemporaryFile("w+") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ridgeline_dev.ray_apps", json.dumps(spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
            try:
                return proc, _ready_line(proc, stderr)
            except RuntimeError as exc:
                _stop(proc)
                failures.append(str(exc))
    raise RuntimeError("\n\n".join(failures))


def _ready_line(proc: subprocess.Popen[str], stderr: IO[str]) -> dict[str, str]:
    lines: queue.Queue[str | None] = queue.Queue()
    assert proc.stdout is not None

    def read(stdout: IO[str]) -> None:
        for line in stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, args=(proc.stdout,), daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0))
        except queue.Empty:
            line = None
        if line is None:
            stderr.seek(0)
            tail = stderr.read()[-4000:]
            raise RuntimeError(f"the Ray apps did not start (exit {proc.poll()}):\n{tail}")
        if line.startswith(READY):
            urls: dict[str, str] = json.loads(line[len(READY) :])
            return urls


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()  # the child's signal to shut down Serve and Ray
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _run(spec: dict[str, Any]) -> None:
    # Metrics every half second, so the tests' scrapes see a request's effect soon.
    os.environ.setdefault("RAY_metrics_report_interval_ms", "500")
    from ridgeline_serving.proxy_limits import proxy_env

    # Serve's proxy with the serving image's head limits, and the wait bound for a starting
    # model where an app's args set one (the proxy is shared: the first app's bound holds)
    bounds = [
        (args["cold_start_wait_s"], args.get("predicted_cold_start_s"))
        for _, args in spec["apps"].values()
        if args.get("cold_start_wait_s") is not None
    ]
    os.environ.update(proxy_env(*(bounds[0] if bounds else (None, None))))
    import ray
    from ray import serve

    from ridgeline_serving.app import build_app

    ray.init(
        num_cpus=4,
        include_dashboard=False,
        _metrics_export_port=spec["metrics_port"],
        log_to_driver=False,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def stop_when_stdin_closes() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=stop_when_stdin_closes, daemon=True).start()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": spec["http_port"]})
        for name, (route, args) in spec["apps"].items():
            builder = build_app
            if BUILDER in args:
                args = dict(args)
                module, _, function = args.pop(BUILDER).partition(":")
                builder = getattr(importlib.import_module(module), function)
            serve.run(builder(args), name=name, route_prefix=route)
        logs = Path(ray._private.worker._global_node.get_logs_dir_path())  # type: ignore[attr-defined]
        urls = {
            "base": f"http://127.0.0.1:{spec['http_port']}",
            "metrics": f"http://127.0.0.1:{spec['metrics_port']}/metrics",
            "logs": str(logs),
        }
        print(READY + json.dumps(urls), flush=True)
        stop.wait()
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()


if __name__ == "__main__":
    _run(json.loads(sys.argv[1]))
