package supervisor

import (
	"context"
	"fmt"
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

// exporters runs the configured exporters until stopped.
type exporters struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	all    []*export.Exporter
}

// startExporters starts one exporter per [[metering.export]].
func (s *Supervisor) startExporters() error {
	if s.meter.ledger == nil || len(s.conf().Metering.Exports) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	ex := &exporters{cancel: cancel}
	for _, c := range s.conf().Metering.Exports {
		// c's token file was read when the configuration was validated.
		e, err := export.New(c, ledgerSource{s.meter.ledger}, nil, s.log)
		if err == nil {
			ex.all = append(ex.all, e)
			continue
		}
		cancel()
		return fmt.Errorf("%w: metering export %q: %w", ErrConfig, c.Name, err)
	}
	for _, e := range ex.all {
		ex.wg.Add(1)
		go func() {
			defer ex.wg.Done()
			if err := e.Run(ctx); err != nil {
				s.log.Error("metering export stopped", "err", err)
			}
		}()
	}
	s.exports = ex
	return nil
}

func (s *Supervisor) stopExporters() {
	if s.exports == nil {
		return
	}
	s.exports.cancel()
	s.exports.wg.Wait()
	s.exports = nil
}
