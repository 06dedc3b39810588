package api

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/scoped-io/scoped/accounting"
	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/control"
	"github.com/scoped-io/scoped/fleet"
	"github.com/scoped-io/scoped/fleet/bundles"
	"github.com/scoped-io/scoped/fleet/record"
	"github.com/scoped-io/scoped/internal/bundle"
	"github.com/scoped-io/scoped/internal/ident"
	"github.com/scoped-io/scoped/internal/mountinfo"
	"github.com/scoped-io/scoped/internal/testutil"
	"github.com/scoped-io/scoped/metering"
	"github.com/scoped-io/scoped/metering/export"
	"github.com/scoped-io/scoped/metrics"
	"github.com/scoped-io/scoped/netns"
	"github.com/scoped-io/scoped/plugins"
	"github.com/scoped-io/scoped/sandbox"
	"github.com/scoped-io/scoped/supervisor"
)

// sentinels is every exported sentinel error (a package-level var named
// Err…) of the daemon's packages the edge imports, directly or not, by the
// package's path in the module: TestUnitSentinelsListed finds them in the
// source, so that a new one cannot be left out.
var sentinels = map[string]error{
	"supervisor.ErrInvalid":       supervisor.ErrInvalid,
	"supervisor.ErrTooLarge":      supervisor.ErrTooLarge,
	"supervisor.ErrNotFound":      supervisor.ErrNotFound,
	"supervisor.ErrPermission":    supervisor.ErrPermission,
	"supervisor.ErrUnauthorized":  supervisor.ErrUnauthorized,
	"supervisor.ErrDeadline":      supervisor.ErrDeadline,
	"supervisor.ErrOutOfMemory":   supervisor.ErrOutOfMemory,
	"supervisor.ErrBusy":          supervisor.ErrBusy,
	"supervisor.ErrWorker":        supervisor.ErrWorker,
	"supervisor.ErrHandler":       supervisor.ErrHandler,
	"supervisor.ErrStopping":      supervisor.ErrStopping,
	"supervisor.ErrSuspended":     supervisor.ErrSuspended,
	"supervisor.ErrNetworkDenied": supervisor.ErrNetworkDenied,
	"supervisor.ErrRateLimited":   supervisor.ErrRateLimited,
	"supervisor.ErrConcurrency":   supervisor.ErrConcurrency,
	"supervisor.ErrCPUTime":       supervisor.ErrCPUTime,
	"supervisor.ErrQuota":         supervisor.ErrQuota,
	"supervisor.ErrLedger":        supervisor.ErrLedger,
	"supervisor.ErrScopeLimit":    supervisor.ErrScopeLimit,
	"supervisor.ErrUnhealthy":     supervisor.ErrUnhealthy,
	"supervisor.ErrConfig":        supervisor.ErrConfig,

	"internal/ident.ErrInvalid": ident.ErrInvalid,

	"netns.ErrInvalidConfig": netns.ErrInvalidConfig,
	"netns.ErrNoUplink":      netns.ErrNoUplink,
	"netns.ErrExhausted":     netns.ErrExhausted,
	"netns.ErrClosed":        netns.ErrClosed,
	"netns.ErrInvalidRule":   netns.ErrInvalidRule,

	"sandbox.ErrInvalidConfig": sandbox.ErrInvalidConfig,
	"sandbox.ErrNoSeccomp":     sandbox.ErrNoSeccomp,
	"sandbox.ErrNoLauncher":    sandbox.ErrNoLauncher,
	"sandbox.ErrStart":         sandbox.ErrStart,
	"sandbox.ErrNoIDs":         sandbox.ErrNoIDs,
	"sandbox.ErrAddress":       sandbox.ErrAddress,
	"sandbox.ErrUnsafeSocket":  sandbox.ErrUnsafeSocket,

	"cgroups.ErrInvalidPath":    cgroups.ErrInvalidPath,
	"cgroups.ErrInvalidLimit":   cgroups.ErrInvalidLimit,
	"cgroups.ErrNotSupported":   cgroups.ErrNotSupported,
	"cgroups.ErrNotUnified":     cgroups.ErrNotUnified,
	"cgroups.ErrBusy":           cgroups.ErrBusy,
	"cgroups.ErrInvalidStat":    cgroups.ErrInvalidStat,
	"cgroups.ErrNotDelegated":   cgroups.ErrNotDelegated,
	"cgroups.ErrNoFavorDynMods": cgroups.ErrNoFavorDynMods,

	"accounting.ErrNotSupported":   accounting.ErrNotSupported,
	"accounting.ErrInvalidOptions": accounting.ErrInvalidOptions,
	"accounting.ErrInvalidScope":   accounting.ErrInvalidScope,
	"accounting.ErrTracked":        accounting.ErrTracked,
	"accounting.ErrNotTracked":     accounting.ErrNotTracked,
	"accounting.ErrFull":           accounting.ErrFull,
	"accounting.ErrClosed":         accounting.ErrClosed,

	"control.ErrInvalidConfig": control.ErrInvalidConfig,
	"control.ErrClosed":        control.ErrClosed,
	"control.ErrInvalidPSI":    control.ErrInvalidPSI,
	"control.ErrNoActuator":    control.ErrNoActuator,

	"internal/mountinfo.ErrMalformed": mountinfo.ErrMalformed,

	"metering.ErrInvalid":      metering.ErrInvalid,
	"metering.ErrUnknownMeter": metering.ErrUnknownMeter,
	"metering.ErrTooLarge":     metering.ErrTooLarge,
	"metering.ErrSchemaTooNew": metering.ErrSchemaTooNew,
	"metering.ErrNotLedger":    metering.ErrNotLedger,
	"metering.ErrLocked":       metering.ErrLocked,
	"metering.ErrClosed":       metering.ErrClosed,
	"metering.ErrReadOnly":     metering.ErrReadOnly,
	"metering.ErrCorrupt":      metering.ErrCorrupt,
	"metering.ErrSealed":       metering.ErrSealed,

	"metering/export.ErrInvalidConfig": export.ErrInvalidConfig,
	"metering/export.ErrDelivery":      export.ErrDelivery,
	"metering/export.ErrRefused":       export.ErrRefused,
	"metering/export.ErrRejected":      export.ErrRejected,
	"metering/export.ErrSource":        export.ErrSource,

	"metrics.ErrAddrInUse": metrics.ErrAddrInUse,
	"metrics.ErrListen":    metrics.ErrListen,

	"plugins.ErrNoHandler":       plugins.ErrNoHandler,
	"plugins.ErrHandlerPanic":    plugins.ErrHandlerPanic,
	"plugins.ErrResultTooLarge":  plugins.ErrResultTooLarge,
	"plugins.ErrExit":            plugins.ErrExit,
	"plugins.ErrInvalidMetadata": plugins.ErrInvalidMetadata,
	"plugins.ErrReplyTooLarge":   plugins.ErrReplyTooLarge,

	"fleet/record.ErrInvalid":           record.ErrInvalid,
	"fleet.ErrUnavailable":              fleet.ErrUnavailable,
	"fleet.ErrNoBundle":                 fleet.ErrNoBundle,
	"fleet.ErrStopped":                  fleet.ErrStopped,
	"fleet.ErrNotFound":                 fleet.ErrNotFound,
	"fleet.ErrPolicyMismatch":           fleet.ErrPolicyMismatch,
	"fleet.ErrNodeTaken":                fleet.ErrNodeTaken,
	"fleet.ErrInvalid":                  fleet.ErrInvalid,
	"fleet/bundles.ErrNotFound":         bundles.ErrNotFound,
	"fleet/bundles.ErrTooLarge":         bundles.ErrTooLarge,
	"fleet/bundles.ErrProtocol":         bundles.ErrProtocol,
	"fleet/bundles.ErrNotNode":          bundles.ErrNotNode,
	"fleet/bundles.ErrDigestMismatch":   bundles.ErrDigestMismatch,
	"internal/bundle.ErrInvalidDigest":  bundle.ErrInvalidDigest,
	"internal/bundle.ErrDigestMismatch": bundle.ErrDigestMismatch,
}

// internalSentinels are the sentinels meant to be INTERNAL: the daemon's
// own failures (its configuration, the host's kernel, a corrupt ledger, a
// bug in what it asks a package), which the caller can do nothing about and
// whose text may name host paths. Every other sentinel has its code.
var internalSentinels = []string{
	"supervisor.ErrConfig",
	"netns.ErrInvalidConfig",
	"sandbox.ErrInvalidConfig", "sandbox.ErrNoSeccomp", "sandbox.ErrNoLauncher",
	"cgroups.ErrInvalidPath", "cgroups.ErrInvalidLimit", "cgroups.ErrNotSupported", "cgroups.ErrNotUnified",
	"cgroups.ErrInvalidStat", "cgroups.ErrNotDelegated", "cgroups.ErrNoFavorDynMods",
	"accounting.ErrNotSupported", "accounting.ErrInvalidOptions", "accounting.ErrInvalidScope",
	"accounting.ErrTracked", "accounting.ErrNotTracked",
	"control.ErrInvalidConfig", "control.ErrInvalidPSI", "control.ErrNoActuator",
	"internal/mountinfo.ErrMalformed",
	"metering.ErrSchemaTooNew", "metering.ErrNotLedger", "metering.ErrReadOnly", "metering.ErrCorrupt", "metering.ErrSealed",
	"metering/export.ErrInvalidConfig", "metering/export.ErrDelivery", "metering/export.ErrRefused",
	"metering/export.ErrRejected", "metering/export.ErrSource",
	"metrics.ErrAddrInUse", "metrics.ErrListen",
	"plugins.ErrNoHandler",
	"fleet/record.ErrInvalid", "fleet.ErrInvalid", "fleet.ErrPolicyMismatch", "fleet.ErrNodeTaken",
}

// Every sentinel that can reach the edge has a deliberate code: a mapped
// one its code (never UNKNOWN or INTERNAL), one of internalSentinels
// INTERNAL. A supervisor sentinel's answer carries the error's text; a
// sentinel of a package beneath only the sentinel's own text and an id
// (what wraps it may name host paths), the whole error in the log.
func TestUnitEverySentinelMapped(t *testing.T) {
	logs := &testutil.SyncBuffer{}
	a := unitAPI()
	a.log = slog.New(slog.NewTextHandler(logs, nil))
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range sentinels {
			if !yield(k) {
				return
			}
		}
	}) {
		sentinel := sentinels[name]
		err := fmt.Errorf("open /var/lib/scoped/x: %w", sentinel)
		st := status.Convert(a.statusFor("/scoped.v1.Scoped/Invoke", caller{}, err))
		internal := slices.Contains(internalSentinels, name)
		switch {
		case internal && st.Code() != codes.Internal:
			t.Errorf("%s is listed as INTERNAL but maps to %v", name, st.Code())
		case internal:
		case st.Code() == codes.Internal || st.Code() == codes.Unknown || st.Code() == codes.OK:
			t.Errorf("%s (%q) maps to %v: map it in status.go or list it in internalSentinels", name, sentinel, st.Code())
		case strings.HasPrefix(name, "supervisor."):
			if st.Message() != err.Error() {
				t.Errorf("%s: message %q, want the error's text", name, st.Message())
			}
		default:
			m := reErrorID.FindStringSubmatch(strings.Replace(st.Message(), sentinel.Error(), "internal error", 1))
			if !strings.HasPrefix(st.Message(), sentinel.Error()+" (id ") || m == nil {
				t.Errorf("%s: message %q, want the sentinel's text and an id", name, st.Message())
			} else if !strings.Contains(logLine(logs, m[1]), "/var/lib/scoped/x") {
				t.Errorf("%s: the log lacks the error under id %s:\n%s", name, m[1], logs)
			}
		}
	}
	// netns.ErrExhausted as it reaches the edge from a scope's network.
	exhausted := fmt.Errorf("scope acme.production: egress network: %w", fmt.Errorf("%w: 254 addresses of 10.77.0.0/24 in use", netns.ErrExhausted))
	if st := status.Convert(a.statusFor("/scoped.v1.Scoped/Invoke", caller{}, exhausted)); st.Code() != codes.ResourceExhausted {
		t.Errorf("netns.ErrExhausted: %v, want RESOURCE_EXHAUSTED", st.Code())
	}
}

// daemonSource is what the non-generated, non-test source of every package
// of the module that the edge imports (directly or not) declares: its
// exported package-level vars named Err… ("pkg.ErrX", pkg the package's
// path in the module), and which packages import gRPC's codes or status.
func daemonSource(t *testing.T) (sentinels map[string]bool, grpcCodes map[string][]string, packages int) {
	t.Helper()
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(gomod), "\n")
	module, ok := strings.CutPrefix(first, "module ")
	if !ok {
		t.Fatalf("go.mod begins %q", first)
	}
	fset := token.NewFileSet()
	found := map[string]bool{}
	codeUsers := map[string][]string{}
	seen := map[string]bool{}
	var walk func(rel string)
	walk = func(rel string) {
		if seen[rel] {
			return
		}
		seen[rel] = true
		files, err := filepath.Glob(filepath.Join("..", rel, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("package %s: no source (%v)", rel, err)
		}
		for _, path := range files {
			if strings.HasSuffix(path, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			if ast.IsGenerated(f) {
				continue
			}
			for _, imp := range f.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				if sub, ok := strings.CutPrefix(p, module+"/"); ok {
					walk(sub)
				}
				if p == "google.golang.org/grpc/codes" || p == "google.golang.org/grpc/status" {
					codeUsers[rel] = append(codeUsers[rel], filepath.Base(path))
				}
			}
			for _, d := range f.Decls {
				g, ok := d.(*ast.GenDecl)
				if !ok || g.Tok != token.VAR {
					continue
				}
				for _, spec := range g.Specs {
					for _, n := range spec.(*ast.ValueSpec).Names {
						if strings.HasPrefix(n.Name, "Err") && n.IsExported() {
							found[rel+"."+n.Name] = true
						}
					}
				}
			}
		}
	}
	walk("api")
	if !seen["supervisor"] || !seen["netns"] || !seen["sandbox"] {
		t.Fatalf("the walk found only %v", seen)
	}
	return found, codeUsers, len(seen) - 1
}

// TestUnitSentinelsListed fails on a sentinel of the daemon's source that
// sentinels lacks, or a name in sentinels or internalSentinels that is no
// sentinel.
func TestUnitSentinelsListed(t *testing.T) {
	found, _, packages := daemonSource(t)
	t.Logf("%d sentinels in %d packages", len(found), packages)
	for name := range found {
		if _, ok := sentinels[name]; !ok {
			t.Errorf("%s is not in sentinels: add it, with its code in status.go or in internalSentinels", name)
		}
	}
	for name := range sentinels {
		if !found[name] {
			t.Errorf("sentinels lists %s, which the source does not declare", name)
		}
	}
	for _, name := range internalSentinels {
		if _, ok := sentinels[name]; !ok {
			t.Errorf("internalSentinels lists %s, which sentinels does not", name)
		}
	}
}

// Only the edge turns errors into gRPC codes. (plugins' call.go reads the
// status of a call to a worker, on the client side of the worker protocol,
// and hands on sentinels.)
func TestUnitOnlyTheEdgeImportsCodes(t *testing.T) {
	_, users, _ := daemonSource(t)
	for pkg, files := range users {
		if pkg == "api" || pkg == "plugins" && slices.Equal(files, []string{"call.go", "call.go"}) {
			continue
		}
		t.Errorf("%s imports gRPC codes or status (%s): return sentinel errors, and map them in api/status.go", pkg, strings.Join(files, ", "))
	}
}
