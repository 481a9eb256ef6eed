"""The local stack the tests and `make demo` run against: real processes on loopback.

Each module starts one real component (kube-apiserver + etcd, Prometheus, MLflow,
PostgreSQL) on free loopback ports in a scratch directory and stops it cleanly.
"""
