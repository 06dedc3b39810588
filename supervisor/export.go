package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/scoped-io/scoped/metering"
	"github.com/scoped-io/scoped/metering/export"
)

// ledgerSource lets an exporter read the ledger.
type ledgerSource struct{ l *metering.Ledger }

func (s ledgerSource) Sealed(after int64, limit int) ([]export.Record, error) {
	recs, err := s.l.Sealed(after, limit)
	if err != nil {
		return nil, err
	}
	out := make([]export.Record, len(recs))
	for i, r := range recs {
		out[i] = export.Record{
			ID: r.ID, Tenant: r.Tenant, Meter: r.Meter, Scope: r.Dims.Scope, Environment: r.Dims.Environment,
			Extension: r.Dims.Extension, WindowStart: r.WindowStart, Window: r.Window, Value: r.Value, Seq: r.Seq,
		}
	}
	return out, nil
}

func (s ledgerSource) LoadExportCursor(name string) (int64, error) { return s.l.LoadExportCursor(name) }
func (s ledgerSource) SaveExportCursor(name string, seq int64) error {
	return s.l.SaveExportCursor(name, seq)
}

// exporters runs one exporter per [[metering.export]] over the meter's
// ledger, from Start until Stop (none while metering is off).
type exporters struct {
	conf  func() *Config
	meter *meter
	log   *slog.Logger

	mu     sync.Mutex
	cancel context.CancelFunc // nil: not running
	wg     sync.WaitGroup
}

var _ component = (*exporters)(nil)

func newExporters(conf func() *Config, m *meter, log *slog.Logger) *exporters {
	return &exporters{conf: conf, meter: m, log: log}
}

// Start starts the exporters of the configuration in force.
func (x *exporters) Start(context.Context) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.cancel != nil {
		return errors.New("metering exporters already running")
	}
	l := x.meter.ledger
	if l == nil || len(x.conf().Metering.Exports) == 0 {
		return nil
	}
	var all []*export.Exporter
	for _, c := range x.conf().Metering.Exports {
		// c's token file was read when the configuration was validated.
		e, err := export.New(c, ledgerSource{l}, nil, x.log)
		if err != nil {
			return fmt.Errorf("%w: metering export %q: %w", ErrConfig, c.Name, err)
		}
		all = append(all, e)
	}
	ctx, cancel := context.WithCancel(context.Background())
	x.cancel = cancel
	for _, e := range all {
		x.wg.Add(1)
		go func() {
			defer x.wg.Done()
			if err := e.Run(ctx); err != nil {
				x.log.Error("metering export stopped", "err", err)
			}
		}()
	}
	return nil
}

// Stop stops the exporters and waits for them.
func (x *exporters) Stop() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.cancel == nil {
		return nil
	}
	x.cancel()
	x.wg.Wait()
	x.cancel = nil
	return nil
}
