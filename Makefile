# scoped — see README.md. Targets that run things need root (sudo make ...).
GO      ?= go
TAGS    := seccomp
GOFLAGS_BUILD := -tags $(TAGS)
BIN     := bin

.PHONY: all build run test test-unit bench generate lint deps clean

all: build

deps:
	@scripts/deps.sh build

build: deps
	CGO_ENABLED=1 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/scoped ./cmd/scoped

# Runs the daemon on its embedded defaults (as root).
run: build
	./$(BIN)/scoped

# Every test. Root tests (cgroups, sandboxes) skip with a reason when not run
# as root; -p 1 keeps CPU-share checks from competing with each other.
test: deps
	CGO_ENABLED=1 $(GO) test $(GOFLAGS_BUILD) -p 1 -count=1 -timeout 15m ./...

# Tests that need neither root nor cgo set-up.
test-unit:
	$(GO) test -count=1 -short ./internal/...

bench:
	@scripts/deps.sh bench
	CGO_ENABLED=1 $(GO) run $(GOFLAGS_BUILD) ./bench/cmd/sandboxbench -o BENCHMARKS.md

generate:
	$(GO) generate ./...

lint: deps
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(GOFLAGS_BUILD) ./...

clean:
	rm -rf $(BIN)
