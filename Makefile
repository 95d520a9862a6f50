# apipool: make test installs what the tests need (as root) and runs them all.
GO ?= go
export PATH := /usr/local/go/bin:$(PATH)

.PHONY: test test-deps test-examples test-browser test-deploy image vet bench bench-smoke lint fuzz quickstart

# The library's race tests run last, so that their results close the output;
# recorder/clickhouse alone takes 3 to 7 minutes (its servers), hence the timeout.
test: test-deps vet test-examples test-browser test-deploy bench-smoke
	$(GO) test -race -count=1 -timeout 30m ./...

test-deps:
	./scripts/install-test-deps.sh

STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

lint: vet

# Each benchmark once, so none rots (CI runs this through make test).
bench-smoke:
	$(GO) test -short -run='^$$' -bench=. -benchtime=1x ./...
	@if [ -f bench/go.mod ]; then cd bench && $(GO) vet ./... && $(GO) test -run='^$$' -bench=. -benchtime=1x ./...; fi

# The benchmark suite, enough runs for benchstat.
bench:
	@if [ -f bench/go.mod ]; then cd bench && $(GO) test -run='^$$' -bench=. -count=6 -benchtime=1s ./... | tee ../bench.out; else $(GO) test -run='^$$' -bench=. -count=6 ./... | tee bench.out; fi

fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzParseRetryAfter -fuzztime=30s ./status
	$(GO) test -run='^$$' -fuzz=FuzzRetryAfterHeaders -fuzztime=30s ./status
	$(GO) test -run='^$$' -fuzz=FuzzParseBudget -fuzztime=30s ./status
	$(GO) test -run='^$$' -fuzz=FuzzNewConfig -fuzztime=30s .
	$(GO) test -run='^$$' -fuzz=FuzzJSONField -fuzztime=30s .
	$(GO) test -run='^$$' -fuzz=FuzzParse -fuzztime=30s ./cmd/apipool/internal/config

quickstart:
	$(GO) run ./examples/quickstart

# The SDK examples (oapi-codegen, openai-go), in their own module so that the
# SDKs stay out of the library's dependencies.
test-examples:
	cd examples/sdk && $(GO) vet ./... && $(GO) test -race -count=1 ./...

# The dashboard in headless Chromium (chromedp), in its own module so that
# chromedp stays out of the library's dependencies; screenshots go under
# $(BROWSER_OUT)/_artifacts.
BROWSER_OUT ?= $(CURDIR)/.tmp/browser
test-browser:
	mkdir -p $(BROWSER_OUT)
	cd dashboard/browsertest && $(GO) vet ./... && $(GO) test -race -count=1 -artifacts -outputdir=$(BROWSER_OUT) ./...

# The container image's Dockerfile (its go build line, run here: no
# container engine is needed), the image deploy/image builds (its files,
# config and binary, and its agreement with the Dockerfile) and the Helm
# chart (rendered with Helm's Go SDK; its manifests validated against the
# Kubernetes OpenAPI schemas, which go mod download fetches from the
# k8s.io/kubernetes module; its apipool.yaml validated and served by that
# binary), in their own modules so that Helm, go-containerregistry and the
# Kubernetes types stay out of the library's dependencies. Without -race: the tests run processes and render templates,
# with next to no concurrency of their own, and the race build of the
# Kubernetes types is long. The first run builds the image's binary from
# scratch (CGO_ENABLED=0): minutes on a busy machine, hence the timeout.
test-deploy:
	cd deploy/image && $(GO) vet ./...
	cd deploy/test && $(GO) vet ./... && $(GO) test -count=1 -timeout 30m ./...

# The container image, built without a container engine (deploy/image, a
# module of its own: go-containerregistry): the Dockerfile's image, as a
# tarball for docker load, podman load or crane push. deploy/test checks
# that the two agree. Reproducible: the creation time is the last commit's.
IMAGE_OUT ?= apipool.tar
IMAGE_TAG ?= apipool:devel
IMAGE_VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
IMAGE_REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
image:
	cd deploy/image && SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null) $(GO) run . -repo $(CURDIR) -o $(abspath $(IMAGE_OUT)) -t $(IMAGE_TAG) -version $(IMAGE_VERSION) -revision $(IMAGE_REVISION)
