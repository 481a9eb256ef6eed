"""A real kube-apiserver + etcd on loopback, the way controller-runtime's envtest runs them.

The binaries are built from the Go module proxy at the versions pinned in
`hack/controlplane/go.mod` by `hack/build-controlplane.sh` and cached, so only the
first run on a machine pays for the build.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from devstack.certs import make_pki
from devstack.process import Server, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def toolchain_bin(node: bool = False) -> Path:
    """Build (or reuse from the cache) kube-apiserver, etcd and helm, and with `node` the kubelet,
    scheduler, controller manager and pause of devstack.node; return their folder."""
    script = REPO_ROOT / "hack" / "build-controlplane.sh"
    result = subprocess.run([str(script), *(["--node"] if node else [])], check=True, capture_output=True, text=True)
    return Path(result.stdout.strip().splitlines()[-1])


@dataclass
class ControlPlane:
    url: str
    kubeconfig: Path
    workdir: Path
    bin_dir: Path
    etcd: Server
    apiserver: Server

    def kubectl(self, *args: str, input_text: str | None = None, check: bool = True,
                kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run the real `kubectl` against this control plane."""
        return subprocess.run(["kubectl", f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
                              input=input_text, capture_output=True, text=True, check=check, timeout=120)

    def env(self) -> dict[str, str]:
        """Environment for child processes (operator, plugin) that should talk to this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": f"{self.bin_dir}:{os.environ['PATH']}"}

    def stop(self) -> None:
        self.apiserver.stop()
        self.etcd.stop()


def write_kubeconfig(path: Path, url: str, ca: Path, user: dict[str, str], name: str = "devstack") -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": url, "certificate-authority": str(ca)}}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}],
        "current-context": name,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def start_control_plane(workdir: Path, authorization_mode: str = "RBAC", serving_ips: tuple[str, ...] = ()) -> ControlPlane:
    """Start etcd and kube-apiserver in `workdir`; return once `kubectl` can list namespaces.

    `serving_ips`: more addresses for the serving certificate (devstack.node's pods' gateway)."""
    bin_dir = toolchain_bin()
    workdir.mkdir(parents=True, exist_ok=True)
    pki = make_pki(workdir / "pki", serving_ips)
    etcd_port, etcd_peer_port, api_port = free_port(), free_port(), free_port()
    etcd = Server(
        name="etcd",
        argv=[
            str(bin_dir / "etcd"),
            f"--data-dir={workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}",
            f"--initial-cluster=default=http://127.0.0.1:{etcd_peer_port}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
        log_path=workdir / "etcd.log",
    ).start()
    apiserver = Server(
        name="kube-apiserver",
        argv=[
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--tls-cert-file={pki['serving']}",
            f"--tls-private-key-file={pki['serving-key']}",
            f"--client-ca-file={pki['ca']}",
            # `kubectl logs` and `exec` reach a local node's kubelet as the admin.
            f"--kubelet-client-certificate={pki['admin']}",
            f"--kubelet-client-key={pki['admin-key']}",
            "--kubelet-preferred-address-types=InternalIP",
            f"--service-account-key-file={pki['sa-pub']}",
            f"--service-account-signing-key-file={pki['sa-key']}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--api-audiences=https://kubernetes.default.svc.cluster.local",
            f"--authorization-mode={authorization_mode}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            f"--cert-dir={workdir / 'apiserver-certs'}",
            "--v=0",
        ],
        log_path=workdir / "kube-apiserver.log",
    )
    url = f"https://127.0.0.1:{api_port}"
    kubeconfig = write_kubeconfig(workdir / "kubeconfig", url, pki["ca"],
                                  {"client-certificate": str(pki["admin"]), "client-key": str(pki["admin-key"])})
    plane = ControlPlane(url=url, kubeconfig=kubeconfig, workdir=workdir, bin_dir=bin_dir, etcd=etcd, apiserver=apiserver)
    try:
        apiserver.start()

        def ready() -> bool:
            health = plane.kubectl("get", "--raw=/readyz", check=False)
            return health.returncode == 0 and plane.kubectl("get", "namespace", "default", check=False).returncode == 0

        apiserver.wait_ready(ready, timeout=120)
    except BaseException:
        plane.stop()
        raise
    return plane
