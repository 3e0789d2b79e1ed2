"""The real node: containerd + runc, a CNI bridge, kubelet, kube-proxy and CoreDNS joined to the
loopback control plane, running real containers from images built here (buildah, no registry).

A non-root pod is admitted in a namespace that enforces Pod Security ``restricted``, gets a
bridge address, resolves a Service by name, serves through kube-proxy to the host and to other
pods; ``kubectl logs`` works; a pod reaches the API server in-cluster with its ServiceAccount;
``down`` leaves nothing of the node behind."""

from __future__ import annotations

import ipaddress
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ridgeline_dev import images, node
from ridgeline_dev.cluster import ClusterState, down, kubectl
from ridgeline_dev.real_chain import namespace, real_node_cluster
from tests.e2e.conftest import get_json, wait_for

pytestmark = pytest.mark.cluster
NS = "real-node"
IMAGE = images.operator_image().name  # Debian + Python 3.11 + the kubernetes client


@pytest.fixture(scope="module")
def real() -> Iterator[ClusterState]:
    with real_node_cluster("real-node", serving=False) as state:
        namespace(state, NS)  # restricted
        yield state


RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def pod(name: str, script: str, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": RESTRICTED,
            "containers": [
                {
                    "name": "main",
                    "image": IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", script],
                    "securityContext": CONTAINER_SECURITY,
                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                }
            ],
            **spec,
        },
    }


def apply(state: ClusterState, *objs: dict[str, object]) -> None:
    for obj in objs:
        kubectl(state, "apply", "-f", "-", input_=json.dumps(obj))


def phase(state: ClusterState, name: str) -> str:
    return str(get_json(state, "-n", NS, "pod", name)["status"].get("phase", ""))


def finished(state: ClusterState, name: str, timeout_s: float = 120) -> str:
    """The pod's phase once it ran to completion, and its logs."""
    wait_for(f"pod {name} done", lambda: phase(state, name) in ("Succeeded", "Failed"), timeout_s)
    logs = kubectl(state, "logs", "-n", NS, name).stdout
    assert phase(state, name) == "Succeeded", logs
    return logs


HTTP_SERVER = """
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"served by a real pod")
http.server.HTTPServer(("0.0.0.0", 8080), H).serve_forever()
"""


@pytest.fixture(scope="module")
def web(real: ClusterState) -> str:
    """A restricted pod serving HTTP behind a Service; its ClusterIP."""
    server = pod("web", HTTP_SERVER)
    server["spec"]["restartPolicy"] = "Always"  # type: ignore[index]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    apply(real, server, service)
    wait_for("web Running", lambda: phase(real, "web") == "Running", 120)
    ip = get_json(real, "-n", NS, "service", "web")["spec"]["clusterIP"]

    def endpoint_ready() -> bool:
        slices = get_json(real, "-n", NS, "endpointslices", "-l", "kubernetes.io/service-name=web")
        return any(
            e.get("conditions", {}).get("ready") for s in slices["items"] for e in s["endpoints"]
        )

    wait_for("web endpoint ready", endpoint_ready, 60)
    return str(ip)


def test_restricted_pod_gets_bridge_address_and_logs(real: ClusterState) -> None:
    apply(real, pod("hello", "print('hello from a real container')"))
    assert finished(real, "hello").strip() == "hello from a real container"
    ip = ipaddress.ip_address(get_json(real, "-n", NS, "pod", "hello")["status"]["podIP"])
    assert ip in ipaddress.ip_network(node.POD_CIDR)


def test_restricted_namespace_refuses_a_root_pod(real: ClusterState) -> None:
    bad = pod("root", "print(1)")
    bad["spec"]["securityContext"] = {"runAsUser": 0}  # type: ignore[index]
    result = kubectl(real, "apply", "-f", "-", input_=json.dumps(bad), check=False)
    assert result.returncode != 0
    assert "violates PodSecurity" in result.stderr


def test_service_by_name_from_a_pod_and_through_kube_proxy_from_the_host(
    real: ClusterState, web: str
) -> None:
    script = (
        "import socket, urllib.request\n"
        f"print(socket.gethostbyname('web.{NS}.svc.cluster.local'))\n"
        "print(urllib.request.urlopen('http://web', timeout=10).read().decode())\n"
    )
    apply(real, pod("client", script))
    resolved, body = finished(real, "client").strip().splitlines()
    assert resolved == web
    assert body == "served by a real pod"

    def from_host() -> str:
        try:
            with urllib.request.urlopen(f"http://{web}", timeout=3) as resp:
                return str(resp.read().decode())
        except OSError:
            return ""

    assert wait_for("the Service from the host", from_host, 30) == "served by a real pod"


def test_a_pod_reaches_the_api_server_with_its_service_account(real: ClusterState) -> None:
    kubectl(real, "create", "rolebinding", "view", "-n", NS, "--clusterrole=view",
            f"--serviceaccount={NS}:default")  # fmt: skip
    script = (
        "from kubernetes import client, config\n"
        "config.load_incluster_config()\n"
        f"pods = client.CoreV1Api().list_namespaced_pod('{NS}')\n"
        "print(sorted(p.metadata.name for p in pods.items))\n"
    )
    apply(real, pod("incluster", script))
    assert "'incluster'" in finished(real, "incluster")


def test_down_leaves_nothing_of_the_node(real: ClusterState) -> None:
    workdir = Path(real.workdir)
    before = dict(real.node)
    stopped = down(workdir)
    assert {"containerd", "kubelet", "kube-proxy", "coredns", "gateway"} <= set(stopped)
    assert node._run("ip", "link", "show", node.BRIDGE, check=False).returncode != 0
    for tool in ("iptables-save", "ip6tables-save"):
        assert "KUBE-" not in node._run(tool).stdout
    mounts = Path("/proc/self/mounts").read_text()
    assert str(workdir) not in mounts
    assert not node.CLAIM.exists()
    if not before["kubepods_existed"]:
        assert not node._kubepods()
    assert not {n for n in node._netns() if n.startswith("cni-")} - set(before["netns"])
