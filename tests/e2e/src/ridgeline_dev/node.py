"""A real node for the loopback control plane: containerd + runc, a CNI bridge, kubelet,
kube-proxy and CoreDNS, all as processes of this machine, with their state in the workdir.

The node is named ``localhost`` so that its Hostname address resolves to loopback: the API
server reaches the kubelet there (logs, exec, port-forward) and the kubelet listens nowhere
else. Pods live on a bridge of their own (``rlcni0``, 10.85.0.0/16); CoreDNS answers for
``cluster.local`` on the bridge's gateway address, and kube-proxy (iptables) routes Service
addresses from pods and from the host. Nothing listens on or sends to the machine's external
interface. ``leave()`` stops exactly this: the pods (through the CRI, so the CNI releases their
addresses), the processes by PID, kube-proxy's rules, the bridge, the mounts under the workdir.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ridgeline_dev import images

if TYPE_CHECKING:
    from ridgeline_dev.cluster import ClusterState, Launcher

NODE_NAME = "localhost"
BRIDGE = "rlcni0"
POD_CIDR = "10.85.0.0/16"
GATEWAY = "10.85.0.1"
CLUSTER_DOMAIN = "cluster.local"
CNI_BIN_DIR = "/usr/lib/cni"
NAMESPACE = "k8s.io"  # containerd's namespace for the CRI
KUBELET_STARTS = 3
KUBELET_RESTART_S = 2.0
# The machine-wide claim: one real node per machine (kube-proxy's iptables chains are global).
CLAIM = Path("/run/ridgeline-real-node")
SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    # Replies between pods on one bridge must pass conntrack to undo a Service's DNAT.
    "net/bridge/bridge-nf-call-iptables": "1",
}


def test_workdir(name: str) -> Path:
    """A fresh workdir for a test's cluster with a real node, under the repository's .cache.

    Not pytest's tmp_path: a concurrent pytest session on the machine prunes old basetemps and
    would delete the kubelet's and containerd's state from under a running node."""
    root = Path(__file__).resolve().parents[4] / ".cache" / "test-clusters"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))


class NodeError(RuntimeError):
    """This machine cannot run the real node; the message says exactly what is missing."""


def missing() -> list[str]:
    """What this machine lacks to run containers (empty: the real node can run)."""
    lacks = [
        f"{tool} (Debian package {pkg})"
        for tool, pkg in (
            ("containerd", "containerd"),
            ("runc", "runc"),
            ("ctr", "containerd"),
            ("iptables", "iptables"),
            ("conntrack", "conntrack"),
            ("buildah", "buildah"),
            ("debootstrap", "debootstrap"),
            ("catatonit", "catatonit"),
        )
        if shutil.which(tool) is None
    ]
    if not (Path(CNI_BIN_DIR) / "bridge").exists():
        lacks.append(f"{CNI_BIN_DIR}/bridge (Debian package containernetworking-plugins)")
    if os.geteuid() != 0:
        lacks.append("root (containers, network namespaces and iptables need it)")
    if not Path("/proc/sys/net/bridge").exists():
        lacks.append("the br_netfilter kernel module (modprobe br_netfilter)")
    if not Path("/sys/fs/cgroup").exists():
        lacks.append("a cgroup filesystem at /sys/fs/cgroup")
    return lacks


def _paths(state: ClusterState) -> dict[str, Path]:
    work = Path(state.workdir) / "node"
    return {
        "work": work,
        "containerd": work / "containerd",
        "socket": work / "containerd" / "containerd.sock",
        "cni_conf": work / "cni" / "net.d",
        "cni_ipam": work / "cni" / "ipam",
        "kubelet": work / "kubelet",
        "config": work / "config",
    }


def _ctr(state: ClusterState, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ctr", "--address", str(_paths(state)["socket"]), "-n", NAMESPACE, *args]
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise NodeError(f"ctr {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result


def _containerd_config(state: ClusterState) -> str:
    p = _paths(state)
    return f"""version = 2
root = "{images.containerd_root()}"
state = "{p["containerd"] / "state"}"
[grpc]
  address = "{p["socket"]}"
[ttrpc]
  address = "{p["containerd"] / "ttrpc.sock"}"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{images.PAUSE_IMAGE}"
  # These machines refuse a negative oom_score_adj: without this every sandbox fails.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{p["cni_conf"]}"
"""


def _cni_config(state: ClusterState) -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": "ridgeline",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(_paths(state)["cni_ipam"]),
                },
            }
        ],
    }


def _kubelet_config(state: ClusterState, port: int, healthz_port: int) -> dict[str, object]:
    p = _paths(state)
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "address": "127.0.0.1",
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        # Loopback only, test only: the API server reaches the kubelet without a client cert.
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "clusterDNS": [GATEWAY],
        "clusterDomain": CLUSTER_DOMAIN,
        "containerRuntimeEndpoint": f"unix://{p['socket']}",
        "imageServiceEndpoint": f"unix://{p['socket']}",
        "makeIPTablesUtilChains": False,
        "serializeImagePulls": False,
        # Imported images are never pulled again: keep them, and never evict for a shared disk.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
        "resolvConf": str(p["config"] / "resolv.conf"),
    }


def _kube_proxy_config(state: ClusterState, healthz: int, metrics: int) -> dict[str, object]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": state.kubeconfig},
        "hostnameOverride": NODE_NAME,
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{healthz}",
        "metricsBindAddress": f"127.0.0.1:{metrics}",
        # Leave the machine's conntrack sysctls and loopback routing as they are.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"localhostNodePorts": False},
        "nodePortAddresses": [f"{GATEWAY}/32"],
    }


def _corefile(state: ClusterState) -> str:
    return f"""{CLUSTER_DOMAIN}:53 in-addr.arpa:53 {{
    bind {GATEWAY}
    errors
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa {{
        kubeconfig {state.kubeconfig}
        pods insecure
        fallthrough in-addr.arpa
    }}
    cache 5
}}
"""


def _sysctl(name: str, value: str | None = None) -> str:
    path = Path("/proc/sys") / name
    if value is not None:
        path.write_text(value)
    return path.read_text().strip()


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


def _claim(state: ClusterState) -> None:
    if CLAIM.exists():
        other = json.loads(CLAIM.read_text())
        pid = other.get("containerd_pid", 0)
        if pid and Path(f"/proc/{pid}").exists():
            raise NodeError(
                f"a real node already runs on this machine (cluster {other['workdir']}): "
                "one per machine; stop it with `make cluster-down` or its test"
            )
    CLAIM.write_text(json.dumps({"workdir": state.workdir}))


def join(
    state: ClusterState, launcher: Launcher, bins: dict[str, Path], ports: dict[str, int]
) -> None:
    """Start the node's processes and wait until the node is Ready."""
    lacks = missing()
    if lacks:
        raise NodeError("the real node needs: " + "; ".join(lacks))
    from ridgeline_dev.cluster import ClusterError, _wait, kubectl  # cluster imports this module

    _claim(state)
    p = _paths(state)
    for key in ("containerd", "cni_conf", "cni_ipam", "kubelet", "config"):
        p[key].mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    state.node = {
        "sysctls": {name: _sysctl(name) for name in SYSCTLS},
        "netns": sorted(_netns()),
        "kubepods_existed": bool(_kubepods()),
    }
    state.save()
    for name, value in SYSCTLS.items():
        _sysctl(name, value)
    if _run("ip", "link", "show", BRIDGE, check=False).returncode != 0:
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{GATEWAY}/16", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    state.node["bridge"] = BRIDGE
    state.save()
    ports_out = [state.api_url.rsplit(":", 1)[1], state.s3_endpoint.rsplit(":", 1)[1]]
    launcher.start(
        "gateway",
        # The interpreter's real path (the launcher knows its processes by /proc/PID/exe), so
        # the relay runs as a script: a venv's site-packages are not on that interpreter's path.
        [
            os.path.realpath(sys.executable),
            str(Path(__file__).with_name("gateway.py")),
            GATEWAY,
            *ports_out,
        ],
    )

    (p["config"] / "containerd.toml").write_text(_containerd_config(state))
    (p["cni_conf"] / "10-ridgeline.conflist").write_text(json.dumps(_cni_config(state), indent=2))
    (p["config"] / "resolv.conf").write_text(f"nameserver {GATEWAY}\n")
    launcher.start(
        "containerd",
        ["/usr/bin/containerd", "--config", str(p["config"] / "containerd.toml")],
    )
    CLAIM.write_text(
        json.dumps({"workdir": state.workdir, "containerd_pid": state.pids["containerd"]})
    )
    _wait(
        "containerd",
        lambda: _ctr(state, "version", check=False).returncode == 0,
        60,
        state,
        "containerd",
    )
    import_image(state, images.pause())

    (p["config"] / "Corefile").write_text(_corefile(state))
    launcher.start(
        "coredns",
        [str(bins["coredns"]), "-conf", str(p["config"] / "Corefile"), "-dns.port", "53"],
    )

    kubelet_cfg = _kubelet_config(state, ports["kubelet"], ports["kubelet-healthz"])
    (p["config"] / "kubelet.yaml").write_text(json.dumps(kubelet_cfg, indent=2))
    kubelet = [
        str(bins["kubelet"]),
        "--config",
        str(p["config"] / "kubelet.yaml"),
        "--kubeconfig",
        state.kubeconfig,
        "--hostname-override",
        NODE_NAME,
        "--root-dir",
        str(p["kubelet"]),
        # Not the machine's own address: the bridge gateway, this node's only interface.
        "--node-ip",
        GATEWAY,
        "--v=1",
    ]
    launcher.start("kubelet", kubelet)
    proxy_cfg = _kube_proxy_config(state, ports["proxy-healthz"], ports["proxy-metrics"])
    (p["config"] / "kube-proxy.yaml").write_text(json.dumps(proxy_cfg, indent=2))
    launcher.start(
        "kube-proxy",
        [str(bins["kube-proxy"]), "--config", str(p["config"] / "kube-proxy.yaml"), "--v=1"],
    )
    for start in range(1, KUBELET_STARTS + 1):
        try:
            _wait("node localhost Ready", lambda: _ready(state, kubectl), 120, state, "kubelet")
            break
        except ClusterError:
            if start == KUBELET_STARTS or launcher.alive("kubelet"):
                raise
            # What systemd's Restart= does for a node's kubelet. It exits at once when
            # containerd's CRI plugin is not initialized yet ("server is not initialized yet"),
            # which `ctr version` above does not wait for (CI met it once).
            print(f"[node] kubelet exited while starting (start {start}); again", flush=True)
            time.sleep(KUBELET_RESTART_S)
            launcher.start("kubelet", kubelet)
    print(f"[node] {NODE_NAME} Ready in {time.monotonic() - started:.1f}s", flush=True)


def _ready(state: ClusterState, kubectl: object) -> bool:
    result = kubectl(state, "get", "node", NODE_NAME, "-o", "json", check=False)  # type: ignore[operator]
    if result.returncode != 0:
        return False
    conditions = json.loads(result.stdout)["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def import_image(state: ClusterState, archive: Path) -> None:
    """Import a docker-archive into containerd's CRI namespace (skipped if already there)."""
    marker = images.containerd_root().with_name("imported") / archive.name
    if marker.exists():
        return
    started = time.monotonic()
    _ctr(state, "images", "import", str(archive))
    seconds = time.monotonic() - started
    marker.parent.mkdir(parents=True, exist_ok=True)
    # What the import took: the node's stand-in for an image pull (no registry here).
    marker.write_text(f"{seconds:.1f}\n")
    print(f"[node] imported {archive.name} in {seconds:.0f}s", flush=True)


def image_import_seconds(archive: Path) -> float | None:
    """How long this archive's import into the node's containerd took (None: unknown, e.g.
    imported before the time was recorded)."""
    marker = images.containerd_root().with_name("imported") / archive.name
    try:
        return float(marker.read_text())
    except (OSError, ValueError):
        return None


def leave(state: ClusterState, kill: object) -> None:
    """Stop the node's pods through the kubelet and the CRI, then its processes (``kill``
    stops one by name), then undo what ``join`` changed on the machine."""
    from ridgeline_dev.cluster import kubectl  # here: cluster imports this module

    if not state.node:
        return
    p = _paths(state)
    alive = "kubelet" in state.pids and _alive(state, "kubelet")
    if alive:
        kubectl(state, "cordon", NODE_NAME, check=False)
        kubectl(
            state,
            *("delete", "pods", "--all", "--all-namespaces", "--wait=false"),
            *("--field-selector", f"spec.nodeName={NODE_NAME}", "--grace-period=2"),
            check=False,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _sandboxes(state):
            time.sleep(0.5)
    for name in ("kube-proxy", "kubelet", "coredns", "gateway"):
        kill(name)  # type: ignore[operator]
    if "containerd" in state.pids and _alive(state, "containerd"):
        # Whatever the kubelet did not stop (it was gone, or too slow): stop it here.
        for task in _ctr(state, "tasks", "ls", "-q", check=False).stdout.split():
            _ctr(state, "tasks", "kill", "-s", "SIGKILL", task, check=False)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            tasks = _ctr(state, "tasks", "ls", "-q", check=False).stdout.split()
            for task in tasks:
                _ctr(state, "tasks", "delete", task, check=False)
            if not tasks:
                break
            time.sleep(0.3)
        for container in _ctr(state, "containers", "ls", "-q", check=False).stdout.split():
            _ctr(state, "containers", "delete", container, check=False)
    kill("containerd")  # type: ignore[operator]
    # Sandboxes the kubelet did not stop keep their network namespace (and its veth): the CNI
    # never ran DEL for them.
    for name in sorted(_netns() - set(state.node.get("netns", []))):
        if name.startswith("cni-"):
            _run("ip", "netns", "delete", name, check=False)
    config = p["config"] / "kube-proxy.yaml"
    if "kube-proxy" in state.commands and config.exists():
        _run(state.commands["kube-proxy"], "--cleanup", "--config", str(config), check=False)
    _drop_kubelet_firewall()
    if state.node.get("bridge"):
        _run("ip", "link", "delete", BRIDGE, check=False)
    for name, value in state.node.get("sysctls", {}).items():
        _sysctl(name, value)
    _unmount_under(p["work"])
    if not state.node.get("kubepods_existed", True):
        _remove_cgroups(_kubepods())
    if CLAIM.exists() and json.loads(CLAIM.read_text()).get("workdir") == state.workdir:
        CLAIM.unlink()
    state.node = {}
    state.save()


def _alive(state: ClusterState, name: str) -> bool:
    from ridgeline_dev.cluster import _is_ours  # here: cluster imports this module

    return _is_ours(state.pids[name], state.commands[name])


def _sandboxes(state: ClusterState) -> list[str]:
    """Running tasks (stopped ones stay listed until the kubelet removes their sandbox)."""
    lines = _ctr(state, "tasks", "ls", check=False).stdout.splitlines()[1:]
    return [line.split()[0] for line in lines if line.split()[-1] == "RUNNING"]


def _netns() -> set[str]:
    root = Path("/var/run/netns")
    return {p.name for p in root.iterdir()} if root.exists() else set()


def _unmount_under(root: Path) -> None:
    """Unmount what the kubelet and containerd left mounted under ``root`` (deepest first)."""
    prefix = str(root.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        _run("umount", "-l", target, check=False)


def _drop_kubelet_firewall() -> None:
    """The kubelet's empty KUBE-FIREWALL chain and its jumps (kube-proxy's cleanup leaves them)."""
    for tool in ("iptables", "ip6tables"):
        listing = _run(tool, "-S", "KUBE-FIREWALL", check=False)
        if listing.returncode != 0 or listing.stdout.strip() != "-N KUBE-FIREWALL":
            continue
        for chain in ("INPUT", "OUTPUT"):
            while _run(tool, "-D", chain, "-j", "KUBE-FIREWALL", check=False).returncode == 0:
                pass
        _run(tool, "-X", "KUBE-FIREWALL", check=False)


def _kubepods() -> list[Path]:
    """The kubelet's pod cgroups (cgroup v1: one per controller; v2: one)."""
    return [p for p in Path("/sys/fs/cgroup").glob("*kubepods*") if p.is_dir()] + [
        p for p in Path("/sys/fs/cgroup").glob("*/kubepods*") if p.is_dir()
    ]


def _remove_cgroups(roots: list[Path]) -> None:
    """rmdir each cgroup tree, leaves first (the kernel refuses a cgroup with processes)."""
    for root in roots:
        for path in sorted((d for d in root.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
            with contextlib.suppress(OSError):
                path.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()
