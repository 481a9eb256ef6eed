//go:build tools

// Package tools pins the control-plane binaries the tests and `make demo` run:
// kube-apiserver from k8s.io/kubernetes and etcd from go.etcd.io/etcd/server/v3,
// both resolved through this module so etcd's relative replaces never apply.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
