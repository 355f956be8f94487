# nodeha: see README.md.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/nodeha/nodeha/cli.Version=$(VERSION)
SPILO_TEST_IMAGE ?= nodeha-spilo-test:15
HOST_TEST_IMAGE ?= nodeha-host-test:bookworm

.PHONY: build image demo demo-down test unit e2e lint bench clean

## build: the static, stripped binary in bin/nodeha
build:
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o bin/nodeha .

## image: the Spilo-compatible test image and the systemd + cloud-init test host image (debootstrap + docker import; cached)
image:
	bash testimage/build.sh --image $(SPILO_TEST_IMAGE)
	bash testimage/build-host.sh --image $(HOST_TEST_IMAGE)

## demo: build everything and start a local three-host cluster
demo: build image
	go run ./internal/cmd/demo up

## demo-down: remove the demo cluster and its data
demo-down:
	go run ./internal/cmd/demo down

## lint: gofmt, go vet, static build
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	go vet ./...
	go vet -tags e2e ./e2e
	CGO_ENABLED=0 go build -o /dev/null .

## unit: unit tests of every package
unit:
	go test -count=1 ./...

## e2e: end-to-end tests on three simulated hosts (needs Docker and the image)
e2e: image
	go test -tags e2e -count=1 -v -timeout 60m ./e2e

## test: everything CI runs
test: lint unit e2e

## bench: the fault benchmark (baseline vs nodeha, 10 trials per fault)
bench: image
	go run ./internal/cmd/bench -trials $(or $(TRIALS),10) -out bench-results.json

clean:
	rm -rf bin
