"""Local kube-apiserver + etcd control plane for tests (see README.md).

Import from the submodules (``tests.controlplane.cluster``,
``tests.controlplane.fixtures``); nothing is imported here so that
``python -m tests.controlplane.cluster`` runs cleanly.
"""
