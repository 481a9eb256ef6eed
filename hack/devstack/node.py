"""One real node beside the local control plane: containerd + runc, kubelet, scheduler, controllers.

The binaries are the pinned Kubernetes module's (`hack/build-controlplane.sh --node`); containerd,
runc and the CNI plugins are Debian's. Pods join a bridge (`mr0`, 10.88.0.0/24) whose gateway
address is this host. There is no Service proxy: the apiserver listens on loopback and has no
`kubernetes` Service endpoint, so pods are told where it is (KUBERNETES_SERVICE_HOST/PORT, see
`Node.in_cluster_env`) and reach it, and any other loopback server they need (MLflow, PostgreSQL),
through a socat relay on the gateway address (`Node.expose`).

Two settings differ from a stock node, both because this machine is itself a sandbox:
containerd's `restrict_oom_score_adj` (lowering a process' OOM score is not permitted here), and
cgroupfs as the cgroup driver (no systemd). Everything else is the kubelet's defaults, its
ConfigMap delivery among them, which is what a test of a revert on this node must live with.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import yaml

from devstack.controlplane import ControlPlane, toolchain_bin
from devstack.images import CACHE, PAUSE_REF, Image
from devstack.process import Server, free_port

NODE_NAME = "node-0"
BRIDGE, GATEWAY, POD_SUBNET = "mr0", "10.88.0.1", "10.88.0.0/24"
CNI_BIN = Path("/usr/lib/cni")


def _bridge() -> None:
    """The pods' bridge with the gateway address, made before anything binds to that address."""
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0:
        subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "replace", f"{GATEWAY}/24", "dev", BRIDGE], check=True)
    subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)


def _containerd_config(workdir: Path, socket: Path) -> Path:
    cni = workdir / "cni"
    cni.mkdir(parents=True, exist_ok=True)
    (cni / "10-modelrollout.conflist").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": "modelrollout",
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET, "gateway": GATEWAY}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(workdir / "cni-ipam")}},
            {"type": "loopback"},
        ],
    }))
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    path = workdir / "containerd.toml"
    path.write_text(f"""version = 2
root = "{CACHE / 'containerd'}"
state = "{workdir / 'containerd-state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{socket}"
[{cri}]
  sandbox_image = "{PAUSE_REF}"
  restrict_oom_score_adj = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{cni}"
""")
    return path


def _kubelet_config(workdir: Path, socket: Path, plane: ControlPlane, port: int, healthz: int) -> Path:
    path = workdir / "kubelet.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": GATEWAY,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(plane.workdir / "pki" / "ca.pem")}},
        "authorization": {"mode": "AlwaysAllow"},
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{socket}",
        "imageServiceEndpoint": f"unix://{socket}",
        # A shared build machine's disk is never "free enough" by the defaults' 10-15 %.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "resolvConf": "/etc/resolv.conf",
        "serializeImagePulls": False,
    }))
    return path


@dataclass
class Node:
    """The node's processes; `stop()` removes its pods' containers and mounts, keeping cached images."""

    plane: ControlPlane
    workdir: Path
    bin_dir: Path
    socket: Path
    lock: IO[str]
    servers: list[Server] = field(default_factory=list)  # in start order
    relays: dict[int, Server] = field(default_factory=dict)

    def ctr(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(["ctr", f"--address={self.socket}", "--namespace=k8s.io", *args],
                                check=check, capture_output=True, text=True, timeout=600)
        return result.stdout

    def load(self, image: Image) -> None:
        """Import `image` into containerd unless this image ID is there already."""
        marker = CACHE / "containerd" / f"imported-{image.image_id}"
        if marker.exists() and image.ref in self.ctr("images", "ls", "-q"):
            return
        self.ctr("images", "import", "--all-platforms", str(image.archive))
        marker.touch()

    def expose(self, port: int) -> str:
        """`GATEWAY:port`, relayed to the host's loopback port, so pods reach a server of the stack."""
        if port not in self.relays:
            relay = Server(name=f"relay-{port}", log_path=self.workdir / f"relay-{port}.log",
                           argv=["socat", f"TCP-LISTEN:{port},bind={GATEWAY},fork,reuseaddr", f"TCP:127.0.0.1:{port}"])
            self.relays[port] = relay.start()
            relay.wait_ready(lambda: _accepts(GATEWAY, port), timeout=10)
        return f"{GATEWAY}:{port}"

    def in_cluster(self, url: str) -> str:
        """`url` of a loopback server of the stack (any scheme) as pods reach it: through its relay."""
        match = re.search(r"127\.0\.0\.1:(\d+)", url)
        if match is None:
            raise ValueError(f"{url} is not a loopback address")
        return url.replace(match.group(0), self.expose(int(match.group(1))), 1)

    def in_cluster_env(self) -> list[dict[str, str]]:
        """EnvVars that point a pod's in-cluster client at the apiserver (there is no Service proxy)."""
        host, port = self.in_cluster(self.plane.url).removeprefix("https://").split(":")
        return [{"name": "KUBERNETES_SERVICE_HOST", "value": host}, {"name": "KUBERNETES_SERVICE_PORT", "value": port}]

    def _clear_containers(self) -> None:
        for task in self.ctr("tasks", "ls", "-q", check=False).split():
            self.ctr("tasks", "kill", "--signal=SIGKILL", task, check=False)
            self.ctr("tasks", "delete", "--force", task, check=False)
        for container in self.ctr("containers", "ls", "-q", check=False).split():
            self.ctr("containers", "delete", container, check=False)

    @staticmethod
    def _remove_empty_pod_netns() -> None:
        """Network namespaces the CNI made for sandboxes that ended without a CRI teardown (a forced
        stop): only those no process is in, so another runtime's pods are never touched."""
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()
        for name in (line.split()[0] for line in listed if line.startswith("cni-")):
            if not subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.strip():
                subprocess.run(["ip", "netns", "delete", name], capture_output=True)

    def _unmount(self) -> None:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(str(self.workdir))), key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)

    def stop(self) -> None:
        with contextlib.suppress(Exception):  # let the kubelet tear its pods' sandboxes down
            self.plane.kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period=0", "--force", "--wait=false")
            deadline = time.monotonic() + 30
            while self.ctr("tasks", "ls", "-q", check=False).strip() and time.monotonic() < deadline:
                time.sleep(0.5)
        for server in reversed(self.servers):
            if server.name == "containerd":
                self._clear_containers()
            with contextlib.suppress(Exception):
                server.stop()
        for relay in self.relays.values():
            with contextlib.suppress(Exception):
                relay.stop()
        self._unmount()
        self._remove_empty_pod_netns()
        self.lock.close()  # releases the machine's one node


def _accepts(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, port)) == 0


def _one_node_per_machine(timeout: float = 900) -> IO[str]:
    """The bridge, its gateway address and containerd's cached root are the machine's: a second
    node waits for the first to stop (a benchmark beside a test run), and says so if it cannot."""
    CACHE.mkdir(parents=True, exist_ok=True)
    lock = (CACHE / "node.lock").open("a+")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            if time.monotonic() > deadline:
                lock.close()
                raise TimeoutError(f"another local node held {CACHE / 'node.lock'} for {timeout:.0f}s") from None
            time.sleep(1)


def start_node(plane: ControlPlane, workdir: Path, images: list[Image]) -> Node:
    """Start containerd with `images` loaded, then the scheduler, controllers and a Ready kubelet."""
    bin_dir = toolchain_bin(node=True)
    workdir.mkdir(parents=True, exist_ok=True)
    socket = workdir / "containerd.sock"
    node = Node(plane=plane, workdir=workdir, bin_dir=bin_dir, socket=socket, lock=_one_node_per_machine())
    admin = str(plane.kubeconfig)
    pki = plane.workdir / "pki"
    try:
        _bridge()
        containerd = Server(name="containerd", argv=["containerd", f"--config={_containerd_config(workdir, socket)}"],
                            log_path=workdir / "containerd.log")
        node.servers.append(containerd.start())
        containerd.wait_ready(lambda: socket.exists() and bool(node.ctr("version", check=False)), timeout=60)
        node._clear_containers()  # a run killed before its stop() left them behind
        for image in images:
            node.load(image)
        kube_flags = [f"--kubeconfig={admin}", f"--authentication-kubeconfig={admin}", f"--authorization-kubeconfig={admin}",
                      "--bind-address=127.0.0.1", "--leader-elect=false"]
        node.servers.append(Server(name="kube-scheduler", log_path=workdir / "kube-scheduler.log",
                                   argv=[str(bin_dir / "kube-scheduler"), *kube_flags, f"--secure-port={free_port()}"]).start())
        node.servers.append(Server(name="kube-controller-manager", log_path=workdir / "kube-controller-manager.log", argv=[
            str(bin_dir / "kube-controller-manager"), *kube_flags, f"--secure-port={free_port()}",
            f"--service-account-private-key-file={pki / 'sa-key.pem'}", f"--root-ca-file={pki / 'ca.pem'}",
            "--controllers=*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle,-route"]).start())
        kubelet = Server(name="kubelet", log_path=workdir / "kubelet.log", argv=[
            str(bin_dir / "kubelet"), f"--config={_kubelet_config(workdir, socket, plane, free_port(), free_port())}",
            f"--kubeconfig={admin}", f"--hostname-override={NODE_NAME}", f"--node-ip={GATEWAY}",
            f"--root-dir={workdir / 'kubelet'}", f"--cert-dir={workdir / 'kubelet-pki'}"])
        node.servers.append(kubelet.start())

        def ready() -> bool:
            status = plane.kubectl("get", "node", NODE_NAME, "-o",
                                   "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False)
            return status.stdout.strip() == "True"

        kubelet.wait_ready(ready, timeout=120)
    except BaseException:
        node.stop()
        raise
    return node
