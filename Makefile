# nodeha: see README.md.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/nodeha/nodeha/cli.Version=$(VERSION)
# The Spilo generation of the demo and the benchmark: 3.0-p1 (the recipe's
# spilo-15, PostgreSQL 15, Patroni 3.0) or 4.0-p3 (spilo-17, PostgreSQL 17,
# Patroni 4.0). The end-to-end tests run both.
SPILO ?= 3.0-p1
GENERATIONS ?= 3.0-p1 4.0-p3
# Where the real Spilo files of each tag are: SPILO_ROOT/<tag>/postgres-appliance.
SPILO_ROOT ?= $(abspath ../shared/spilo)
HOST_TEST_IMAGE ?= nodeha-host-test:bookworm
E2E_LOGS ?= e2e-logs

.PHONY: build deps image image-s3 image-% demo demo-down test unit e2e e2e-% lint bench clean

## build: the static, stripped binary in bin/nodeha
build:
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o bin/nodeha .

## deps: what the image builds need (debootstrap), installed with apt when missing
deps:
	@bash testimage/deps.sh

## image: the Spilo test images of every generation (the real Spilo scripts
## on Debian's packages), the systemd + cloud-init test host and the S3
## test server (cached)
image: deps image-s3
	SPILO_ROOT=$(SPILO_ROOT) bash testimage/images.sh $(GENERATIONS)
	bash testimage/build-host.sh --image $(HOST_TEST_IMAGE)

## image-s3: the S3 test server, Versity S3 Gateway built with go install (cached)
image-s3:
	bash testimage/build-s3.sh

image-%: deps
	SPILO_SRC=$(SPILO_ROOT)/$* bash testimage/build.sh --tag $*

## demo: build everything and start a local three-host cluster (SPILO=3.0-p1|4.0-p3)
demo: build deps image-$(SPILO)
	go run ./internal/cmd/demo -spilo $(SPILO) up

## demo-down: remove the demo cluster and its data
demo-down:
	go run ./internal/cmd/demo down

STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

## lint: gofmt, go vet, staticcheck, go.mod tidy, static build
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	go vet ./...
	go vet -tags e2e ./e2e
	go run $(STATICCHECK) ./...
	go run $(STATICCHECK) -tags e2e ./e2e
	go mod tidy -diff
	CGO_ENABLED=0 go build -o /dev/null .

## unit: unit tests of every package
unit:
	go test -count=1 ./...

## e2e: the end-to-end suites on three simulated hosts, once per Spilo
## generation, the generations at the same time (logs in E2E_LOGS/<tag>.log)
e2e: image
	@bash testimage/e2e.sh $(E2E_LOGS) $(GENERATIONS)

## e2e-TAG: the end-to-end suites on one generation, in the foreground
e2e-%: image-% image-s3
	bash testimage/build-host.sh --image $(HOST_TEST_IMAGE)
	NODEHA_E2E_SPILO=$* go test -tags e2e -count=1 -v -timeout 80m ./e2e

## test: everything CI runs
test: lint unit e2e

## bench: the fault benchmark (baseline vs nodeha, 10 trials per fault)
bench: image-$(SPILO)
	go run ./internal/cmd/bench -spilo $(SPILO) -trials $(or $(TRIALS),10) -out bench-results.json

clean:
	rm -rf bin
