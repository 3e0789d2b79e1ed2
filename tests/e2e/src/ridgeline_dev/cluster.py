"""A real Kubernetes control plane on loopback, as plain processes: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok (fake nodes, no kubelet), the KubeRay operator
and MinIO. ``make cluster-up`` / ``make cluster-down`` and the pytest fixtures share this code.

The API server runs as envtest runs it: ServiceAccount admission off, a token file for an admin
(system:masters) and an unprivileged user, RBAC on. kwok marks nodes annotated
``kwok.x-k8s.io/node: fake`` Ready and runs the pods bound to them.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ridgeline_dev import node
from ridgeline_dev.s3server import minio_argv, minio_env
from ridgeline_dev.s3server import ready as s3_ready
from ridgeline_dev.servers import start_on_free_ports
from ridgeline_dev.toolchain import MODULES, cache_root, ensure_all, module_source_dir

REPO = Path(__file__).resolve().parents[4]
KUBERAY_MODULE = "github.com/ray-project/kuberay/ray-operator"
# The CRDs of the KubeRay operator the harness builds, from the same module (config/crd/bases).
# The operator waits for every kind it watches (RayJob and RayCronJob too) and exits without.
KUBERAY_CRD_FILES = (
    "ray.io_rayclusters.yaml",
    "ray.io_rayservices.yaml",
    "ray.io_rayjobs.yaml",
    "ray.io_raycronjobs.yaml",
)
OUR_CRDS = REPO / "crds"
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
OPERATOR_NAMESPACE = "ridgeline-system"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:ridgeline-operator"

KWOK_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)
# How kwok's nodes say they are alive. "status": the whole node status every 20-45 s (kubelets
# before node leases). "lease": a Lease renewed every 10 s and the status every 10-20 min, as
# kubelets have done since Kubernetes 1.17 (they post it every 5 min when nothing changed);
# a controller that watches Nodes then sees a node change only when it changes.
KWOK_HEARTBEATS = {
    "status": "kustomize/stage/node/heartbeat/node-heartbeat.yaml",
    "lease": "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
}


def default_workdir() -> Path:
    return Path(os.environ.get("RIDGELINE_CLUSTER_DIR", REPO / ".cache" / "cluster"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ClusterState:
    workdir: str
    api_url: str
    kubeconfig: str
    admin_token: str
    user_token: str
    operator_token: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    pids: dict[str, int] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    # What the real node changed on the machine (ridgeline_dev.node), to undo at ``down``.
    node: dict[str, Any] = field(default_factory=dict)

    @property
    def operator_kubeconfig(self) -> str:
        return str(Path(self.workdir) / "operator.kubeconfig")

    @property
    def logs(self) -> Path:
        return Path(self.workdir) / "logs"

    def save(self) -> None:
        (Path(self.workdir) / "state.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, workdir: Path) -> ClusterState:
        return cls(**json.loads((workdir / "state.json").read_text()))

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": self.kubeconfig}


class ClusterError(RuntimeError):
    pass


def _kubeconfig(path: Path, server: str, user: str, token: str) -> None:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "ridgeline",
                        "cluster": {"server": server, "insecure-skip-tls-verify": True},
                    }
                ],
                "users": [{"name": user, "user": {"token": token}}],
                "contexts": [{"name": user, "context": {"cluster": "ridgeline", "user": user}}],
                "current-context": user,
            },
            indent=2,
        )
    )


class Launcher:
    """Starts processes detached (their own session), logs to files, remembers PIDs."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        state.logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.state.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env or dict(os.environ),
            start_new_session=True,
            cwd=self.state.workdir,
        )
        self.state.pids[name] = proc.pid
        self.state.commands[name] = argv[0]
        self.state.save()

    def alive(self, name: str) -> bool:
        return _is_ours(self.state.pids[name], self.state.commands[name])


def _is_ours(pid: int, command: str) -> bool:
    """True if ``pid`` still runs ``command`` (a reused PID of another program is not ours)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return exe.removesuffix(" (deleted)") == command and stat.split()[2] != "Z"


def _wait(what: str, check: object, timeout_s: float, state: ClusterState, proc: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        if not Launcher(state).alive(proc):
            tail = (state.logs / f"{proc}.log").read_text(errors="replace")[-3000:]
            raise ClusterError(f"{proc} exited while waiting for {what}:\n{tail}")
        time.sleep(0.2)
    raise ClusterError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def _http_ok(url: str, token: str | None = None) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=2, context=ctx) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def kubectl(
    state: ClusterState,
    *args: str,
    check: bool = True,
    input_: str | None = None,
    user: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run the kubectl built with the control plane (admin unless ``user``)."""
    binary = str(Path(state.commands["kube-apiserver"]).with_name("kubectl"))
    config = state.kubeconfig if not user else str(Path(state.workdir) / "user.kubeconfig")
    result = subprocess.run(
        [binary, "--kubeconfig", config, *args],
        input=input_,
        capture_output=True,
        text=True,
    )
    if check and result.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def up(
    workdir: Path,
    with_kuberay: bool = True,
    with_s3: bool = True,
    real_node: bool = False,
    node_heartbeat: Literal["status", "lease"] = "status",
) -> ClusterState:
    started = time.monotonic()
    bins = ensure_all()
    if (workdir / "state.json").exists():
        down(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for sub in ("etcd", "certs", "s3"):
        (workdir / sub).mkdir(exist_ok=True)
    ports = {
        name: free_port()
        for name in (
            "etcd",
            "etcd-peer",
            "api",
            "s3",
            "s3-console",
            "kwok",
            "kubelet",
            "kubelet-healthz",
            "proxy-healthz",
            "proxy-metrics",
        )
    }
    state = ClusterState(
        workdir=str(workdir),
        api_url=f"https://127.0.0.1:{ports['api']}",
        kubeconfig=str(workdir / "kubeconfig"),
        admin_token=secrets.token_hex(16),
        user_token=secrets.token_hex(16),
        operator_token=secrets.token_hex(16),
        s3_endpoint=f"http://127.0.0.1:{ports['s3']}",
        s3_access_key="ridgeline",
        s3_secret_key=secrets.token_hex(12),
    )
    launcher = Launcher(state)
    certs = workdir / "certs"
    subprocess.run(
        ["openssl", "genrsa", "-out", str(certs / "sa.key"), "2048"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["openssl", "rsa", "-in", str(certs / "sa.key"), "-pubout", "-out", str(certs / "sa.pub")],
        check=True,
        capture_output=True,
    )
    (certs / "tokens.csv").write_text(
        f'{state.admin_token},admin,admin,"system:masters"\n'
        f"{state.user_token},dev-user,dev-user\n"
        # The operator as the chart's ServiceAccount would be: RBAC decides what it may do.
        f"{state.operator_token},{OPERATOR_USER},operator,"
        f'"system:serviceaccounts,system:serviceaccounts:{OPERATOR_NAMESPACE}"\n'
    )
    _kubeconfig(Path(state.kubeconfig), state.api_url, "admin", state.admin_token)
    _kubeconfig(workdir / "user.kubeconfig", state.api_url, "dev-user", state.user_token)
    _kubeconfig(workdir / "operator.kubeconfig", state.api_url, "operator", state.operator_token)

    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
    launcher.start(
        "etcd",
        [
            str(bins["etcd"]),
            "--data-dir",
            str(workdir / "etcd"),
            "--name",
            "default",
            "--listen-client-urls",
            etcd_url,
            "--advertise-client-urls",
            etcd_url,
            "--listen-peer-urls",
            peer_url,
            "--initial-advertise-peer-urls",
            peer_url,
            "--initial-cluster",
            f"default={peer_url}",
            "--unsafe-no-fsync",
            "--log-level",
            "warn",
        ],
    )
    _wait("etcd", lambda: _http_ok(f"{etcd_url}/health"), 60, state, "etcd")

    launcher.start(
        "kube-apiserver",
        [
            str(bins["kube-apiserver"]),
            "--etcd-servers",
            etcd_url,
            "--bind-address",
            "127.0.0.1",
            "--advertise-address",
            # The real node's pods reach the API server through the bridge gateway's relay.
            node.GATEWAY if real_node else "127.0.0.1",
            "--secure-port",
            str(ports["api"]),
            "--cert-dir",
            str(certs),
            "--token-auth-file",
            str(certs / "tokens.csv"),
            "--authorization-mode",
            "RBAC",
            "--service-cluster-ip-range",
            "10.96.0.0/16",
            "--service-account-issuer",
            "https://kubernetes.default.svc",
            "--service-account-key-file",
            str(certs / "sa.pub"),
            "--service-account-signing-key-file",
            str(certs / "sa.key"),
            # Without real pods nothing mounts a ServiceAccount token: envtest's setting.
            *(() if real_node else ("--disable-admission-plugins", "ServiceAccount")),
            "--allow-privileged=true",
            "--v=1",
        ],
    )
    _wait(
        "kube-apiserver /readyz",
        lambda: _http_ok(f"{state.api_url}/readyz", state.admin_token),
        120,
        state,
        "kube-apiserver",
    )

    launcher.start(
        "kube-controller-manager",
        [
            str(bins["kube-controller-manager"]),
            "--kubeconfig",
            state.kubeconfig,
            "--leader-elect=false",
            "--secure-port=0",
            "--controllers=*,-csrsigning",
            "--service-account-private-key-file",
            str(certs / "sa.key"),
            "--use-service-account-credentials=false",
            # The CA in every pod's kube-root-ca.crt: the API server's own self-signed cert.
            *(("--root-ca-file", str(certs / "apiserver.crt")) if real_node else ()),
            "--v=1",
        ],
    )
    launcher.start(
        "kube-scheduler",
        [
            str(bins["kube-scheduler"]),
            "--kubeconfig",
            state.kubeconfig,
            "--leader-elect=false",
            "--secure-port=0",
            "--v=1",
        ],
    )
    kwok_src = module_source_dir(next(m for m in MODULES if m.name == "kwok"), "sigs.k8s.io/kwok")
    stages = [*KWOK_STAGES, KWOK_HEARTBEATS[node_heartbeat]]
    stage_args = [a for stage in stages for a in ("--config", str(kwok_src / stage))]
    launcher.start(
        "kwok",
        [
            str(bins["kwok"]),
            "--kubeconfig",
            state.kubeconfig,
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            "--cidr=10.244.0.0/16",
            "--node-ip=10.0.0.1",
            f"--server-address=127.0.0.1:{ports['kwok']}",
            "--node-lease-duration-seconds=40",  # kwok's default, said here: the stages need it
            *stage_args,
        ],
    )

    kubectl(state, "apply", "--server-side", "-f", str(OUR_CRDS))
    # KubeRay's CRDs always (the operator applies RayServices); its controller on request.
    for path in kuberay_crds():
        kubectl(state, "apply", "--server-side", "-f", str(path))
    crds = [
        "inferencemodels.ridgeline.dev",
        *(f"{p.name.split('_')[1][:-5]}.ray.io" for p in kuberay_crds()),
    ]
    for crd in crds:
        _wait("CRD " + crd, lambda crd=crd: _established(state, crd), 60, state, "kube-apiserver")
    if with_kuberay:
        _start_kuberay(launcher, bins["kuberay-operator"])
    if with_s3:
        s3 = start_on_free_ports(
            "minio",
            ("s3", "s3-console"),
            free_port,
            lambda p: launcher.start(
                "minio",
                minio_argv(workdir / "s3", p["s3"], p["s3-console"]),
                env=minio_env(state.s3_access_key, state.s3_secret_key),
            ),
            lambda: launcher.alive("minio"),
            lambda p: s3_ready(f"http://127.0.0.1:{p['s3']}"),
            state.logs / "minio.log",
        )
        state.s3_endpoint = f"http://127.0.0.1:{s3['s3']}"
    kubectl(state, "create", "namespace", "ridgeline-e2e", check=False)
    if real_node:
        node.join(state, launcher, bins, ports)
    state.save()
    print(f"[cluster] up in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return state


def _start_kuberay(launcher: Launcher, binary: Path) -> None:
    """KubeRay's operator, up once its probe and metrics servers answer (both bound: a taken
    port makes it exit, and it is started again on fresh ones)."""

    def start(ports: dict[str, int]) -> None:
        launcher.start(
            "kuberay-operator",
            [
                str(binary),
                f"--metrics-addr=127.0.0.1:{ports['metrics']}",
                f"--health-probe-bind-address=127.0.0.1:{ports['probe']}",
                "--enable-leader-election=false",
                # Reach Ray heads through the API server's proxy (loopback), not cluster DNS.
                "--use-kubernetes-proxy",
            ],
            env=launcher.state.env(),
        )

    def ready(ports: dict[str, int]) -> bool:
        return _http_ok(f"http://127.0.0.1:{ports['probe']}/readyz") and _http_ok(
            f"http://127.0.0.1:{ports['metrics']}/metrics"
        )

    start_on_free_ports(
        "kuberay-operator",
        ("metrics", "probe"),
        free_port,
        start,
        lambda: launcher.alive("kuberay-operator"),
        ready,
        launcher.state.logs / "kuberay-operator.log",
    )


def kuberay_crds() -> list[Path]:
    """KubeRay's CRDs from the module the operator binary is built from: one version for both."""
    module = next(m for m in MODULES if m.name == "kuberay")
    bases = module_source_dir(module, KUBERAY_MODULE) / "config" / "crd" / "bases"
    return [bases / name for name in KUBERAY_CRD_FILES]


def _established(state: ClusterState, crd: str) -> bool:
    result = kubectl(state, "get", "crd", crd, "-o", "json", check=False)
    if result.returncode != 0:
        return False
    conditions = json.loads(result.stdout).get("status", {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def down(workdir: Path) -> list[str]:
    """Stop exactly the processes this workdir started, by PID, and nothing else."""
    try:
        state = ClusterState.load(workdir)
    except FileNotFoundError:
        return []
    stopped: list[str] = []

    def stop(name: str) -> None:
        if name in state.pids and _stop(state.pids[name], state.commands[name]):
            stopped.append(name)

    node.leave(state, stop)
    for name in reversed(list(state.pids)):
        if name not in stopped:
            stop(name)
    (workdir / "state.json").unlink()
    return stopped


def stop_process(state: ClusterState, name: str) -> bool:
    """Stop one of the processes this cluster started (by name), as ``down`` would."""
    return name in state.pids and _stop(state.pids[name], state.commands[name])


def _stop(pid: int, command: str) -> bool:
    """SIGTERM, then SIGKILL after 15 s; False if the process was not running."""
    if not _is_ours(pid, command):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while _is_ours(pid, command) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _is_ours(pid, command):
        os.kill(pid, signal.SIGKILL)
    return True


def dump_logs(state: ClusterState, lines: int = 40) -> str:
    out = []
    for log in sorted(state.logs.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"===== {log.name} (last {len(tail)} lines)\n" + "\n".join(tail))
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(prog="ridgeline-dev cluster")
    parser.add_argument("action", choices=["up", "down", "status", "kuberay-crds"])
    parser.add_argument("--workdir", type=Path, default=default_workdir())
    parser.add_argument("--no-kuberay", action="store_true")
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument(
        "--real-node",
        action="store_true",
        help="join a real node (containerd, kubelet, CNI, kube-proxy, CoreDNS): needs root",
    )
    parser.add_argument(
        "--images",
        action="store_true",
        help="with --real-node: build (or take cached) the operator and CPU serving images "
        "and import them into the node",
    )
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    if args.action == "up":
        state = up(
            workdir,
            with_kuberay=not args.no_kuberay,
            with_s3=not args.no_s3,
            real_node=args.real_node,
        )
        print(f"# logs: {state.logs}   binaries: {cache_root() / 'bin'}")
        print(
            f"# S3: {state.s3_endpoint} (access key {state.s3_access_key}, secret in "
            f"{workdir / 'state.json'})"
        )
        if state.node and args.images:
            from ridgeline_dev import images  # here: only the real node needs buildah

            for spec in (images.operator_image(), images.serving_image()):
                node.import_image(state, images.build(spec))
                print(f"# image {spec.name} (imagePullPolicy: Never)")
        if state.node:
            print(
                f"# real node {node.NODE_NAME}: pods on {node.POD_CIDR} (bridge {node.BRIDGE}), "
                f"DNS {node.GATEWAY}, Services through kube-proxy from this host; images: "
                f"ctr --address {Path(state.workdir) / 'node/containerd/containerd.sock'} "
                f"-n {node.NAMESPACE} images ls"
            )
        print(f"export KUBECONFIG={state.kubeconfig}")
    elif args.action == "kuberay-crds":
        print("\n".join(str(path) for path in kuberay_crds()))
    elif args.action == "down":
        stopped = down(workdir)
        print("stopped: " + (", ".join(stopped) or "nothing was running"))
    else:
        state = ClusterState.load(workdir)
        launcher = Launcher(state)
        for name in state.pids:
            print(f"{name:26} {'running' if launcher.alive(name) else 'stopped'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
