package supervisor

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/scoped-io/scoped/metering"
	"github.com/scoped-io/scoped/metering/export"
)

// ExportConfig is one [[metering.export]]: an endpoint the sealed usage
// records are pushed to.
type ExportConfig struct {
	Name       string             `toml:"name"`
	Format     string             `toml:"format"` // "stripe" or "cloudevents"
	URL        string             `toml:"url"`
	Token      string             `toml:"token"`      // bearer token (or token_file)
	TokenFile  string             `toml:"token_file"` // read at start and reload
	Customers  map[string]string  `toml:"customers"`  // tenant → Stripe customer id
	EventNames map[string]string  `toml:"event_names"`
	Scales     map[string]float64 `toml:"scales"` // meter → factor (Stripe takes whole numbers)
	Source     string             `toml:"source"` // CloudEvents source
	Batch      int                `toml:"batch"`
	Interval   Duration           `toml:"interval"`
	Timeout    Duration           `toml:"timeout"`
}

func (c ExportConfig) exportConfig() (export.Config, error) {
	token := c.Token
	if c.TokenFile != "" {
		if token != "" {
			return export.Config{}, fmt.Errorf("export %s: token and token_file are exclusive", c.Name)
		}
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return export.Config{}, fmt.Errorf("export %s: %w", c.Name, err)
		}
		token = strings.TrimSpace(string(b))
	}
	ec := export.Config{
		Name: c.Name, URL: c.URL, Format: c.Format, Token: token, Customers: c.Customers,
		EventNames: c.EventNames, Scales: c.Scales, Batch: c.Batch, Source: c.Source,
		Interval: c.Interval.Duration, Timeout: c.Timeout.Duration,
	}
	if ec.Batch > metering.MaxBatch {
		return export.Config{}, fmt.Errorf("export %s: batch %d above %d", c.Name, ec.Batch, metering.MaxBatch)
	}
	return ec, nil
}

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
	if s.meter == nil || len(s.conf().Metering.Exports) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	ex := &exporters{cancel: cancel}
	for _, c := range s.conf().Metering.Exports {
		ec, err := c.exportConfig()
		if err == nil {
			var e *export.Exporter
			if e, err = export.New(ec, ledgerSource{s.meter.ledger}, nil, s.log); err == nil {
				ex.all = append(ex.all, e)
				continue
			}
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
