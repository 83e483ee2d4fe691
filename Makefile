# fluxwarden: `make help` lists the targets. The README's two commands are `make demo` and `make test`.
# Both work from a fresh clone: they install the venv and build the local control plane (once).
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINT_PATHS := webhook tests $(wildcard bench)

.PHONY: help setup controlplane demo test unit lint format golden generate run bench manifests certs-no-cert-manager clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) ## Create .venv and install fluxwarden with its dev tools

controlplane: ## Build kube-apiserver, etcd, kubectl, kube-scheduler, kube-controller-manager, kustomize-controller, the Flux CRDs and Flux's build library (test-only) from Go modules (once per machine)
	tests/controlplane/build.sh > /dev/null
	tests/controlplane/flux/build.sh > /dev/null
	tests/fluxbuild/build.sh > /dev/null
	tests/controlplane/prometheus/build.sh > /dev/null

demo: setup controlplane ## The main job: fluxwarden in front of a local kube-apiserver, as kubectl shows it (DEMO_ARGS=--keep)
	$(BIN)/python -m tests.e2e.demo $(DEMO_ARGS)

lint: setup ## ruff, ruff format --check, mypy --strict, import-linter layer contracts
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy
	$(BIN)/lint-imports

format: setup ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix $(LINT_PATHS)
	$(BIN)/ruff format $(LINT_PATHS)

unit: setup ## Run the tests that need no control plane
	$(BIN)/pytest -m 'not e2e'

test: setup lint controlplane ## Lint, then run every test, end-to-end ones against the real API server
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
