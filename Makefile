# fluxwarden: `make help` lists the targets. The README's two commands are `make demo` and `make test`.
# Both work from a fresh clone: they install the venv and build the local control plane (once).
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINT_PATHS := webhook tests image $(wildcard bench)

.PHONY: help setup node-tools image cluster controlplane demo test unit lint format golden generate run bench manifests certs-no-cert-manager clean
# Debian packages the image build and the node tests use (installed by `make node-tools`).
NODE_PACKAGES := debootstrap runc containerd containernetworking-plugins iptables conntrack gcc libc6-dev

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) ## Create .venv and install fluxwarden with its dev tools, and build kustomize-server (renders run kustomize's library in it; without Go, kubectl kustomize per build)
	@tools/kustomize-server/build.sh > /dev/null

node-tools: ## Install the Debian packages the image build and the node tests need (debootstrap, runc, containerd, CNI plugins, iptables, conntrack) with apt-get, when missing (root)
	@missing=$$(for p in $(NODE_PACKAGES); do dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null | grep -qx installed || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get > /dev/null; then \
	  echo "node-tools: not installed: $$missing (needs root and apt-get; the image and node tests will skip)"; exit 0; fi; \
	echo "node-tools: apt-get install $$missing"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing > /dev/null

image: setup node-tools ## Build the image from the Dockerfile without a registry or an engine (debootstrap + image/install.sh, root); prints the OCI archive (cached per machine)
	@if [ "$$(id -u)" = 0 ] && command -v debootstrap > /dev/null; then $(BIN)/python image/build.py; \
	else echo "image: needs root and debootstrap (make node-tools); not built, its tests will skip"; fi

controlplane: ## Build kube-apiserver, etcd, kubectl, kube-scheduler, kube-controller-manager, kubelet, kube-proxy, kustomize-controller, cert-manager's controllers, the Flux CRDs and Flux's build library (test-only) from Go modules (once per machine)
	tests/controlplane/build.sh > /dev/null
	tests/controlplane/flux/build.sh > /dev/null
	tests/fluxbuild/build.sh > /dev/null
	tests/controlplane/prometheus/build.sh > /dev/null
	tests/controlplane/certmanager/build.sh > /dev/null

demo: setup controlplane ## The main job: fluxwarden in front of a local kube-apiserver, as kubectl shows it (DEMO_ARGS=--keep)
	$(BIN)/python -m tests.e2e.demo $(DEMO_ARGS)

cluster: setup controlplane image ## A real node (kubelet + containerd in its own network namespace) with fluxwarden installed from manifests/base and cert-manager, left running: prints its KUBECONFIG; Ctrl-C removes it (root)
	$(BIN)/python -m tests.e2e.node_cluster

lint: setup ## ruff, ruff format --check, mypy --strict, import-linter layer contracts
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy
	$(BIN)/lint-imports

format: setup ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix $(LINT_PATHS)
	$(BIN)/ruff format $(LINT_PATHS)

unit: setup ## Run the tests that need no control plane and no image
	$(BIN)/pytest -m 'not e2e and not node'

test: setup lint controlplane image ## Lint, then run every test, end-to-end ones against the real API server, the image with runc
	$(BIN)/pytest

golden: setup ## Rewrite every golden file (policy cases, audit formats, fix cases) from the code; review the diff
	$(BIN)/python -m tests.golden

generate: setup ## Regenerate manifests/base/generated.yaml (webhooks, ClusterRoles), the alert rules and overlays/native from the policy set
	$(BIN)/fluxwarden manifests --policies policies/flux-best-practices.yaml > manifests/base/generated.yaml
	$(BIN)/fluxwarden alerts --policies policies/flux-best-practices.yaml > manifests/components/monitoring/prometheusrule.yaml
	$(BIN)/fluxwarden manifests --policies policies/flux-best-practices.yaml --hybrid --overlay manifests/overlays/native

run: setup ## Serve the webhook on https://127.0.0.1:8443 with a throwaway certificate
	@mkdir -p .run/certs
	$(BIN)/fluxwarden certs --out .run/certs --dns localhost --ip 127.0.0.1 > /dev/null
	$(BIN)/fluxwarden serve --host 127.0.0.1 --port 8443 --lookups auto \
	  --cert-file .run/certs/tls.crt --key-file .run/certs/tls.key

bench: setup controlplane ## Webhook latency/throughput over TLS per policy vs a no-op baseline; writes through the kube-apiserver vs no admission and vs Kyverno; audit and fix of 10k objects vs Kyverno's CLI; Flux dependsOn chain
	tests/controlplane/kyverno/build.sh > /dev/null
	$(BIN)/python -m bench
	$(BIN)/python -m bench.apiserver
	$(BIN)/python -m bench.offline_audit
	$(BIN)/python -m bench.offline_audit --peer kyverno
	$(BIN)/python -m bench.cluster_audit
	$(BIN)/python -m bench.flux_chain

manifests: controlplane ## Render manifests/base and every overlay with kubectl kustomize
	@for dir in manifests/base manifests/overlays/*/; do \
	  echo "--- $$dir"; $$(tests/controlplane/build.sh --print-dir)/kubectl kustomize $$dir > /dev/null || exit 1; \
	done

certs-no-cert-manager: setup ## Serving certificate + CA for manifests/overlays/no-cert-manager (git-ignored)
	$(BIN)/fluxwarden certs --out manifests/overlays/no-cert-manager/certs \
	  --dns fluxwarden.fluxwarden-system.svc --dns fluxwarden.fluxwarden-system.svc.cluster.local > /dev/null

clean: ## Remove the venv and caches
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache .hypothesis
