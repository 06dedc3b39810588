# scoped — see README.md. Targets that run things need root (sudo make ...).
GO      ?= go
TAGS    := seccomp
GOFLAGS_BUILD := -tags $(TAGS)
BIN     := bin

.PHONY: all build examples run test test-host test-v2 test-systemd test-unit fuzz bench bench-v2 generate generate-check lint deps clean

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
# VM on each kernel, then the service under systemd in a VM (see README).
# One after the other, even under make -j: the host's CPU-share tests must
# not compete with the VMs.
test:
	$(MAKE) test-host
	$(MAKE) test-v2
	$(MAKE) test-systemd

# Every test on this host, after checking the generated code (see
# generate-check). Root tests (cgroups, sandboxes) skip with a reason when
# not run as root; -p 1 keeps CPU-share checks from competing. Then every
# fuzz target for FUZZTIME (see fuzz).
test-host: deps generate-check
	CGO_ENABLED=1 $(GO) test $(GOFLAGS_BUILD) -p 1 -count=1 -timeout 15m ./...
	# the sandbox tests again with the other launcher (the default is native)
	CGO_ENABLED=1 $(GO) test $(GOFLAGS_BUILD) -count=1 -timeout 5m ./sandbox -args -launcher libcontainer
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
# Debian's kernels the VM packages run on, one VM each, side by side
# (SCOPED_VM_KERNEL in scripts/vm-test.sh): make test-v2 VM_KERNELS=6.12.
VM_KERNELS ?= 6.1 6.12
# The e2e tests the VMs skip: the daemon's own logic (API edge, ledger and
# journal, reload, watchdog, logs, version store, pool, metrics), which no
# kernel changes and which runs on the host; the service's reload, notify
# and watchdog run for real under systemd (test-systemd). Both kernels run
# every test of the other packages and the e2e tests of sandboxes,
# cgroups, the delegated layout, OOM, kill and restart recovery,
# accounting (eBPF), networks and CPU and memory shares. (6.1 ran the
# logic tests too until the systemd VM came: 895 s against 6.12's 610.)
VM_SKIP_LOGIC := ^(TestWorkerOutputNeverTheDaemons|TestWatchdogPings|TestPolicyExtension|TestLogs|TestBadInput|TestClientCannotActForOthers|TestReloadAndNotify|TestSpendCap|TestMeteringExport|TestMeteringJournalKill9|TestMeteringLedger|TestKeepVersions|TestMetrics|TestTop|TestPoolRecycleAndIdle)$$
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
	# The live noisy-neighbour tests (the scope rule, and the idle cap
	# for a latency-bound victim) run on the host only: under emulation
	# the guest's run-queue and preemption figures do not resemble a
	# machine's, and their thresholds would be tuned to the emulator
	# (cpu.idle itself is tested in the VMs by package cgroups).
	# The fleet's tests (TestFleet*) run on the host only: nothing in them
	# depends on the cgroup version, and an embedded etcd with several
	# daemons under emulation would take most of the VM's time.
	SCOPED_VM_TIMEOUT=1500 SCOPED_VM_ENV="SCOPED_E2E_BIN=$(CURDIR)/$(VM_E2E)" \
	SCOPED_VM_TESTFLAGS="-test.count=1 -test.timeout=15m -test.skip=TestNoisyNeighbourSteppedDown|TestShareIdleForLatencyBoundVictim|TestTrackMany|TestFleet" \
	SCOPED_VM_KERNEL="$(VM_KERNELS)" SCOPED_VM_SKIP_6_1='$(VM_SKIP_LOGIC)' SCOPED_VM_SKIP_6_12='$(VM_SKIP_LOGIC)' \
		scripts/vm-test.sh $(VM_DIR) $(foreach p,$(VM_PKGS),$(CURDIR)/$(VM_DIR)/bin/$(p).test@$(CURDIR)/$(p))

# scoped as a systemd service: a VM of test-v2's 6.1 kernel with the host's
# systemd as PID 1 (scripts/vm-test.sh, SCOPED_VM_INIT=systemd), where
# scripts/systemd-check.sh installs the daemon as README's "Installing on a
# systemd host" says, and checks start (READY), the cgroup layout, deploy
# and invoke, reload, kill -9, the watchdog, the journal and stop. The
# binaries and bundles are built here. SYSTEMD_CHECK_SKIP=step,... leaves
# steps out (e.g. layout).
SYSTEMD_BIN        := $(VM_DIR)/systemd-bin
SYSTEMD_CHECK_SKIP ?=
test-systemd: deps
	@scripts/deps.sh systemd
	@rm -rf $(SYSTEMD_BIN) && mkdir -p $(SYSTEMD_BIN)/bundles
	@CGO_ENABLED=1 $(GO) build $(GOFLAGS_BUILD) -o $(SYSTEMD_BIN)/scoped ./cmd/scoped
	@CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(SYSTEMD_BIN)/scoped-exec ./cmd/scoped-exec
	@CGO_ENABLED=0 $(GO) build -o $(SYSTEMD_BIN)/scopectl ./cmd/scopectl
	@for ex in whoami spin; do \
		mkdir -p $(SYSTEMD_BIN)/bundles/$$ex && cp examples/$$ex/manifest.toml $(SYSTEMD_BIN)/bundles/$$ex/ && \
		CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(SYSTEMD_BIN)/bundles/$$ex/$$ex ./examples/$$ex || exit 1; \
	done
	@chmod -R a+rX $(VM_DIR)
	SCOPED_VM_INIT=systemd SCOPED_VM_KERNEL=6.1 SCOPED_VM_TIMEOUT=600 \
	SCOPED_VM_ENV="SCOPED_SYSTEMD_BIN=$(CURDIR)/$(SYSTEMD_BIN) SCOPED_SYSTEMD_SKIP=$(SYSTEMD_CHECK_SKIP)" \
		scripts/vm-test.sh $(VM_DIR) $(CURDIR)/scripts/systemd-check.sh@$(CURDIR)

# The tests that need neither root nor a kernel feature, as any user: under
# -short the root tests skip (testutil.RequiresRoot) and so do the long ones.
# As another user than the module cache's owner, that cache must be
# readable (GOMODCACHE) and GOCACHE writable.
test-unit: deps
	CGO_ENABLED=1 $(GO) test $(GOFLAGS_BUILD) -short -count=1 ./...

bench:
	@scripts/deps.sh bench
	CGO_ENABLED=1 $(GO) run $(GOFLAGS_BUILD) ./bench/cmd/sandboxbench -o BENCHMARKS.md
	# the opt-in cgroup_favordynmods, host-wide for this run only
	CGO_ENABLED=1 $(GO) run $(GOFLAGS_BUILD) ./bench/cmd/sandboxbench -favordynmods -o BENCHMARKS.md
	CGO_ENABLED=1 $(GO) run $(GOFLAGS_BUILD) ./bench/cmd/invokebench -o BENCHMARKS.md
	CGO_ENABLED=1 $(GO) run $(GOFLAGS_BUILD) ./bench/cmd/netbench -o BENCHMARKS.md
	CGO_ENABLED=1 $(GO) run $(GOFLAGS_BUILD) ./bench/cmd/switchbench -o BENCHMARKS.md
	CGO_ENABLED=1 $(GO) run $(GOFLAGS_BUILD) ./bench/cmd/fairbench -o BENCHMARKS.md
	$(GO) run ./bench/cmd/ledgerbench -o BENCHMARKS.md
	CGO_ENABLED=1 $(GO) run $(GOFLAGS_BUILD) ./bench/cmd/deploybench -o BENCHMARKS.md
	CGO_ENABLED=1 $(GO) run $(GOFLAGS_BUILD) ./bench/cmd/soakbench -o BENCHMARKS.md
	CGO_ENABLED=1 $(GO) run $(GOFLAGS_BUILD) ./bench/cmd/churnbench -o BENCHMARKS.md
	CGO_ENABLED=1 $(GO) run $(GOFLAGS_BUILD) ./bench/cmd/fleetbench -o BENCHMARKS.md

# fairbench's share scenarios in the VM of test-v2 on each kernel of
# BENCH_VM_KERNELS (scripts/vm-test.sh's SCOPED_VM_KERNEL), with fairbench,
# the daemon, scoped-exec and the spin bundle built here (no compiling under
# emulation; SCOPED_BENCH_BIN points the benchmark at them). Each VM writes
# its section to $(VM_DIR)/fairbench-<kernel>.md, labelled by the kernel it
# booted (fairbench-vm-<major.minor>), which goes into BENCHMARKS.md beside
# the host's section. The noisy-neighbour phases measure latency, which
# means nothing under emulation: they run on the host only (make bench).
# The kernels' VMs run side by side (one emulator thread each).
# FAIRBENCH_VM_FLAGS replaces the runs' flags, e.g. "-repeat 1 -duration 4s
# -scenarios equal" for a smoke run, and BENCH_V2_OUT the file merged into.
BENCH_VM_KERNELS   ?= 6.1 6.12
BENCH_VM_TIMEOUT   ?= 3600
FAIRBENCH_VM_FLAGS ?= -scenarios equal,tiers,scopes
BENCH_V2_OUT       ?= BENCHMARKS.md
BENCH_VM_BIN       := $(VM_DIR)/bench-bin
bench-v2: deps
	@rm -rf $(BENCH_VM_BIN) && mkdir -p $(BENCH_VM_BIN)/bundles/spin
	CGO_ENABLED=1 $(GO) build $(GOFLAGS_BUILD) -o $(BENCH_VM_BIN)/fairbench ./bench/cmd/fairbench
	CGO_ENABLED=1 $(GO) build $(GOFLAGS_BUILD) -o $(BENCH_VM_BIN)/scoped ./cmd/scoped
	CGO_ENABLED=0 $(GO) build -o $(BENCH_VM_BIN)/scoped-exec ./cmd/scoped-exec
	cp examples/spin/manifest.toml $(BENCH_VM_BIN)/bundles/spin/
	CGO_ENABLED=0 $(GO) build -o $(BENCH_VM_BIN)/bundles/spin/spin ./examples/spin
	@chmod -R a+rX $(VM_DIR)
	@for k in $(BENCH_VM_KERNELS); do \
		out=$(CURDIR)/$(VM_DIR)/fairbench-$$k.md; rm -f $$out; \
		SCOPED_VM_KERNEL=$$k SCOPED_VM_TIMEOUT=$(BENCH_VM_TIMEOUT) SCOPED_VM_ENV="SCOPED_BENCH_BIN=$(CURDIR)/$(BENCH_VM_BIN)" \
		SCOPED_VM_TESTFLAGS="$(FAIRBENCH_VM_FLAGS) -o $$out" \
			scripts/vm-test.sh $(VM_DIR) $(CURDIR)/$(BENCH_VM_BIN)/fairbench@$(CURDIR) 2>&1 | sed -u "s/^/[$$k] /" & \
	done; wait; failed=""; \
	for k in $(BENCH_VM_KERNELS); do \
		out=$(CURDIR)/$(VM_DIR)/fairbench-$$k.md; \
		if [ -s $$out ]; then $(BENCH_VM_BIN)/fairbench -merge $$out -o $(BENCH_V2_OUT) || failed=1; \
		else echo "bench-v2: no figures from kernel $$k"; failed=1; fi; \
	done; [ -z "$$failed" ]

# Rebuilds generated code from source with the pinned Go tools (go.mod's
# tool lines): protobuf, the eBPF objects of accounting/ and netns/
# (bpf2go, with Debian's clang-14 and libbpf-dev) and the sandbox's static
# init (gcc 12 and glibc of Debian 12); see scripts/gencheck.sh.
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
