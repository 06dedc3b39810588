# scoped — see README.md. Targets that run things need root (sudo make ...).
GO      ?= go
TAGS    := seccomp
GOFLAGS_BUILD := -tags $(TAGS)
BIN     := bin

.PHONY: all build examples run test test-host test-v2 test-unit fuzz bench generate generate-check lint deps clean

all: build

deps:
	@scripts/deps.sh build

# The daemon (cgo, libseccomp), and the pure-Go exec runtime and CLI.
build: deps
	CGO_ENABLED=1 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/scoped ./cmd/scoped
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/scoped-exec ./cmd/scoped-exec
	CGO_ENABLED=0 $(GO) build -o $(BIN)/scopectl ./cmd/scopectl

# Example bundles, ready for `scopectl deploy`: build/examples/<name>.
EXAMPLES := build/examples
examples:
	@for ex in whoami spin; do \
		mkdir -p $(EXAMPLES)/$$ex && cp examples/$$ex/manifest.toml $(EXAMPLES)/$$ex/ && \
		CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(EXAMPLES)/$$ex/$$ex ./examples/$$ex || exit 1; \
	done
	@rm -rf $(EXAMPLES)/shout && cp -r examples/shout $(EXAMPLES)/shout
	@chmod -R a+rX build
	@echo "example bundles in $(EXAMPLES)/: whoami spin shout"

# Runs the daemon on its embedded defaults (as root); Ctrl-C stops it.
run: build examples
	./$(BIN)/scoped

# Every test: on this host, then the root tests again on pure cgroup v2 in a
# VM (see README).
test: test-host test-v2

# Every test on this host, after checking the generated code (see
# generate-check). Root tests (cgroups, sandboxes) skip with a reason when
# not run as root; -p 1 keeps CPU-share checks from competing. Then every
# fuzz target for FUZZTIME (see fuzz).
test-host: deps generate-check
	CGO_ENABLED=1 $(GO) test $(GOFLAGS_BUILD) -p 1 -count=1 -timeout 15m ./...
	@GO=$(GO) scripts/fuzz.sh

# Every fuzz target (found by grep) for FUZZTIME each (default 5s):
# FUZZTIME=5m make fuzz fuzzes longer, FUZZ=regexp picks targets.
fuzz: deps
	@GO=$(GO) scripts/fuzz.sh

# The packages whose tests touch cgroups, namespaces or eBPF, run again
# inside a VM booted from Debian's kernel with only cgroup v2 mounted.
# e2e runs there with binaries built here (no compiling under emulation).
VM_PKGS := cgroups sandbox accounting netns e2e
VM_DIR  := build/vm
VM_E2E  := $(VM_DIR)/e2e-bin
test-v2: deps
	@rm -rf $(VM_DIR)/bin $(VM_E2E) && mkdir -p $(VM_DIR)/bin $(VM_E2E)/bundles
	@for p in $(VM_PKGS); do \
		CGO_ENABLED=1 $(GO) test -c $(GOFLAGS_BUILD) -o $(VM_DIR)/bin/$$p.test ./$$p || exit 1; \
	done
	@CGO_ENABLED=1 $(GO) build $(GOFLAGS_BUILD) -o $(VM_E2E)/scoped ./cmd/scoped
	@CGO_ENABLED=0 $(GO) build -o $(VM_E2E)/scoped-exec ./cmd/scoped-exec
	@CGO_ENABLED=0 $(GO) build -o $(VM_E2E)/scopectl ./cmd/scopectl
	@for ex in examples/whoami examples/spin e2e/testdata/misbehave e2e/testdata/netprobe; do \
		n=$$(basename $$ex); mkdir -p $(VM_E2E)/bundles/$$n && cp $$ex/manifest.toml $(VM_E2E)/bundles/$$n/ && \
		CGO_ENABLED=0 $(GO) build -o $(VM_E2E)/bundles/$$n/$$n ./$$ex || exit 1; \
	done
	@for ex in e2e/testdata/sockjack; do cp -r $$ex $(VM_E2E)/bundles/ || exit 1; done
	@chmod -R a+rX $(VM_DIR)
	# The live noisy-neighbour test runs on the host only: under emulation
	# the guest's run-queue and preemption figures do not resemble a
	# machine's, and its thresholds would be tuned to the emulator.
	# The fleet's tests (TestFleet*) run on the host only: nothing in them
	# depends on the cgroup version, and an embedded etcd with several
	# daemons under emulation would take most of the VM's time.
	SCOPED_VM_TIMEOUT=900 SCOPED_VM_ENV="SCOPED_E2E_BIN=$(CURDIR)/$(VM_E2E) SCOPED_TEST_FAIRNESS=1" \
	SCOPED_VM_TESTFLAGS="-test.count=1 -test.timeout=10m -test.skip=TestNoisyNeighbourSteppedDown|TestTrackMany|TestFleet" \
		scripts/vm-test.sh $(VM_DIR) $(foreach p,$(VM_PKGS),$(CURDIR)/$(VM_DIR)/bin/$(p).test@$(CURDIR)/$(p))

# The tests that need neither root nor a kernel feature, as any user: under
# -short the root tests skip (testutil.RequiresRoot) and so do the long ones.
# As another user than the module cache's owner, that cache must be
# readable (GOMODCACHE) and GOCACHE writable.
test-unit: deps
	CGO_ENABLED=1 $(GO) test $(GOFLAGS_BUILD) -short -count=1 ./...

bench:
	@scripts/deps.sh bench
	CGO_ENABLED=1 $(GO) run $(GOFLAGS_BUILD) ./bench/cmd/sandboxbench -o BENCHMARKS.md
	CGO_ENABLED=1 $(GO) run $(GOFLAGS_BUILD) ./bench/cmd/invokebench -o BENCHMARKS.md
	CGO_ENABLED=1 $(GO) run $(GOFLAGS_BUILD) ./bench/cmd/netbench -o BENCHMARKS.md
	CGO_ENABLED=1 $(GO) run $(GOFLAGS_BUILD) ./bench/cmd/switchbench -o BENCHMARKS.md
	CGO_ENABLED=1 $(GO) run $(GOFLAGS_BUILD) ./bench/cmd/fairbench -o BENCHMARKS.md
	$(GO) run ./bench/cmd/ledgerbench -o BENCHMARKS.md
	CGO_ENABLED=1 $(GO) run $(GOFLAGS_BUILD) ./bench/cmd/deploybench -o BENCHMARKS.md
	CGO_ENABLED=1 $(GO) run $(GOFLAGS_BUILD) ./bench/cmd/soakbench -o BENCHMARKS.md
	CGO_ENABLED=1 $(GO) run $(GOFLAGS_BUILD) ./bench/cmd/churnbench -o BENCHMARKS.md
	CGO_ENABLED=1 $(GO) run $(GOFLAGS_BUILD) ./bench/cmd/fleetbench -o BENCHMARKS.md

# Rebuilds generated code from source with the pinned Go tools (go.mod's
# tool lines): protobuf, and the eBPF objects of accounting/ and netns/
# (bpf2go, with Debian's clang-14 and libbpf-dev; see scripts/gencheck.sh).
BPF_CC ?= clang-14
generate:
	@scripts/deps.sh generate
	$(GO) build -o $(BIN)/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	$(GO) build -o $(BIN)/protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc
	BPF2GO_CC=$(BPF_CC) $(GO) generate ./...

# Fails unless the committed generated code is exactly what generate makes
# from the sources (the tree is left as it was). Part of lint and test-host.
generate-check:
	@GO=$(GO) BPF_CC=$(BPF_CC) scripts/gencheck.sh

lint: deps generate-check
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(GOFLAGS_BUILD) ./...

clean:
	rm -rf $(BIN) build
