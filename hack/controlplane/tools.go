//go:build tools

// Package tools pins the control-plane and node binaries the tests and `make demo` run:
// kube-apiserver, kube-controller-manager, kube-scheduler and kubelet from k8s.io/kubernetes,
// and etcd from go.etcd.io/etcd/server/v3, all resolved through this module so etcd's relative
// replaces never apply.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
