#!/usr/bin/env bash
# Builds the pinned kube-apiserver and etcd (and helm) from the Go module proxy into a
# version-keyed cache, so a second run costs nothing. Prints the bin directory.
# `--node` also builds what one real node needs (devstack.node): kubelet, kube-scheduler,
# kube-controller-manager from the same module, and the pod sandbox's pause binary from its C
# source in that module (built static with gcc).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
module_version() { sed -nE "s#^(require)?[[:space:]]*$2 (v[^ ]+).*#\\2#p" "$here/$1/go.mod" | head -n1; }
kube_version=$(module_version controlplane k8s.io/kubernetes)
helm_version=$(module_version helm helm.sh/helm/v3)
[ -n "$kube_version" ] && [ -n "$helm_version" ] || { echo "cannot read pinned versions from hack/*/go.mod" >&2; exit 1; }
cache=${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}
bin="$cache/bin/kube-$kube_version-helm-$helm_version"
mkdir -p "$bin"
export GOFLAGS=-buildvcs=false CGO_ENABLED=0

stamp() { # the version the binary reports through /version and `kubectl version`
  local minor=${kube_version#v1.}; minor=${minor%%.*}
  echo "-s -w -X k8s.io/component-base/version.gitVersion=$kube_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
}

if [ ! -x "$bin/kube-apiserver" ]; then
  (cd "$here/controlplane" && go build -trimpath -ldflags "$(stamp)" -o "$bin/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver) >&2
  mv "$bin/kube-apiserver.tmp" "$bin/kube-apiserver"
fi
if [ ! -x "$bin/etcd" ]; then
  (cd "$here/controlplane" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3) >&2
  mv "$bin/etcd.tmp" "$bin/etcd"
fi
if [ ! -x "$bin/helm" ]; then
  (cd "$here/helm" && go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version" -o "$bin/helm.tmp" helm.sh/helm/v3/cmd/helm) >&2
  mv "$bin/helm.tmp" "$bin/helm"
fi
if [ "${1:-}" = "--node" ]; then
  for cmd in kubelet kube-scheduler kube-controller-manager; do
    if [ ! -x "$bin/$cmd" ]; then
      (cd "$here/controlplane" && go build -trimpath -ldflags "$(stamp)" -o "$bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd") >&2
      mv "$bin/$cmd.tmp" "$bin/$cmd"
    fi
  done
  if [ ! -x "$bin/pause" ]; then
    source_dir=$(cd "$here/controlplane" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
    gcc -Os -static -Wall -DVERSION="$kube_version-modelrollout" -o "$bin/pause.tmp" "$source_dir/build/pause/linux/pause.c" >&2
    strip "$bin/pause.tmp" && mv "$bin/pause.tmp" "$bin/pause"
  fi
fi
echo "$bin"
