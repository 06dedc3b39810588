package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/scoped-io/scoped/fleet/record"
	"github.com/scoped-io/scoped/internal/ident"
)

// writable fails with ErrUnavailable while the state is degraded.
func (s *State) writable() error {
	if since, deg := s.Degraded(); deg {
		return fmt.Errorf("%w: since %s; fleet writes are refused until it is back", ErrUnavailable, since.UTC().Format(time.RFC3339))
	}
	return nil
}

// errLeaseLost: a write under this node's lease found it expired.
var errLeaseLost = errors.New("this node's lease was lost (it registers again)")

// failed turns an etcd error of a write into ErrUnavailable, marking the
// state degraded.
func (s *State) failed(ctx context.Context, what string, err error) error {
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, what, errLeaseLost)
	}
	err = unavailable(ctx, what, err)
	if ctx.Err() == nil || ctx.Err() == context.DeadlineExceeded {
		s.setDegraded(err)
	}
	return err
}

// casLoop reads key and runs step on its current value (nil: absent)
// until the transaction step builds commits, comparing the key's mod
// revision. step returns the ops to put (none: nothing to do).
func (s *State) casLoop(ctx context.Context, what, key string, step func(cur *mvccpb.KeyValue) ([]clientv3.Op, error)) error {
	if err := s.writable(); err != nil {
		return err
	}
	tctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	r, err := s.o.Client.Get(tctx, key)
	if err != nil {
		return s.failed(tctx, what, err)
	}
	var cur *mvccpb.KeyValue
	if len(r.Kvs) == 1 {
		cur = r.Kvs[0]
	}
	for {
		ops, err := step(cur)
		if err != nil || len(ops) == 0 {
			return err
		}
		mod := int64(0)
		if cur != nil {
			mod = cur.ModRevision
		}
		t, err := s.o.Client.Txn(tctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", mod)).
			Then(ops...).Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return s.failed(tctx, what, err)
		}
		if t.Succeeded {
			return nil
		}
		cur = nil
		if kvs := t.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
			cur = kvs[0]
		}
	}
}

// UpdateTenant changes tenant's assignment atomically: change gets the
// current record (exists false: none) and edits it; an error from change
// is returned as is and nothing is written. Updated is set to now.
func (s *State) UpdateTenant(ctx context.Context, tenant string, change func(rec *record.Tenant, exists bool) error) error {
	if err := ident.Check("tenant", tenant); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	key := s.o.Keys.Tenant(tenant)
	return s.casLoop(ctx, "write tenant "+tenant, key, func(cur *mvccpb.KeyValue) ([]clientv3.Op, error) {
		var rec record.Tenant
		exists := cur != nil && record.DecodeState(cur.Value, &rec) == nil
		if !exists {
			rec = record.Tenant{}
		}
		if err := change(&rec, exists); err != nil {
			return nil, err
		}
		rec.Updated = time.Now().UTC()
		if err := rec.Check(); err != nil {
			return nil, err
		}
		b, err := json.Marshal(rec)
		if err != nil {
			return nil, err
		}
		return []clientv3.Op{clientv3.OpPut(key, string(b))}, nil
	})
}

// SetTenant replaces tenant's assignment with rec.
func (s *State) SetTenant(ctx context.Context, tenant string, rec record.Tenant) error {
	return s.UpdateTenant(ctx, tenant, func(cur *record.Tenant, _ bool) error {
		*cur = rec
		return nil
	})
}

// RegisterExtension makes digest (with manifest m) the current version of
// tenant's extension name in env and returns its record: the next
// fleet-wide version, allocated in one transaction on the key's revision
// (two nodes deploying at once get distinct versions), or the current one
// unchanged when it has the same digest. With a Member, the bundle is held
// by this node under its lease in the same transaction (or, while the
// Member registers again, by the Member right after).
func (s *State) RegisterExtension(ctx context.Context, tenant, env, name, digest string, m record.Manifest) (x record.Extension, unchanged bool, err error) {
	for i, kind := range []string{"tenant", "environment", "extension"} {
		if err := ident.Check(kind, []string{tenant, env, name}[i]); err != nil {
			return x, false, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	if err := record.CheckDigest(digest); err != nil {
		return x, false, err
	}
	if err := m.Check(); err != nil {
		return x, false, err
	}
	key := s.o.Keys.Extension(tenant, env, name)
	var hold clientv3.LeaseID
	if s.o.Member != nil {
		hold = s.o.Member.Lease() // 0 while it registers again
	}
	register := func(cur *mvccpb.KeyValue) ([]clientv3.Op, error) {
		x, unchanged = record.Extension{Version: 1, Digest: digest, Manifest: m, Node: s.o.Node, Created: time.Now().UTC().Truncate(time.Second)}, false
		if cur != nil {
			var c record.Extension
			if err := record.DecodeState(cur.Value, &c); err != nil {
				return nil, fmt.Errorf("the fleet's record of %s: %w", extKey(tenant, env, name), err)
			}
			if !c.Removed && c.Digest == digest {
				x, unchanged = c, true
				return nil, nil
			}
			x.Version = c.Version + 1
		}
		if err := x.Check(); err != nil {
			return nil, err
		}
		b, err := json.Marshal(x)
		if err != nil {
			return nil, err
		}
		ops := []clientv3.Op{clientv3.OpPut(key, string(b))}
		if hold != 0 {
			ops = append(ops, clientv3.OpPut(s.o.Keys.Bundle(digest, s.o.Node), "", clientv3.WithLease(hold)))
		}
		return ops, nil
	}
	what := "register " + extKey(tenant, env, name)
	err = s.casLoop(ctx, what, key, register)
	if errors.Is(err, errLeaseLost) {
		// The Member is registering again: register without the holder
		// key, which the Member writes under its new lease.
		hold = 0
		err = s.casLoop(ctx, what, key, register)
	}
	if err != nil {
		return record.Extension{}, false, err
	}
	if s.o.Member != nil && !unchanged {
		bk := s.o.Keys.Bundle(digest, s.o.Node)
		s.o.Member.remember(bk, "")
		if hold != 0 {
			s.o.Member.written(bk, "")
		}
	}
	return x, unchanged, nil
}

// RemoveExtension removes tenant's extension name in env (ErrNotFound if
// there is none); its key stays as a tombstone keeping the version count.
func (s *State) RemoveExtension(ctx context.Context, tenant, env, name string) error {
	key := s.o.Keys.Extension(tenant, env, name)
	if _, _, _, err := s.o.Keys.ExtensionOf(key); err != nil {
		return err
	}
	return s.casLoop(ctx, "remove "+extKey(tenant, env, name), key, func(cur *mvccpb.KeyValue) ([]clientv3.Op, error) {
		var c record.Extension
		if cur == nil || record.DecodeState(cur.Value, &c) != nil || c.Removed {
			return nil, fmt.Errorf("%w: extension %s", ErrNotFound, extKey(tenant, env, name))
		}
		b, err := json.Marshal(record.Extension{Version: c.Version, Node: s.o.Node, Created: time.Now().UTC().Truncate(time.Second), Removed: true})
		if err != nil {
			return nil, err
		}
		return []clientv3.Op{clientv3.OpPut(key, string(b))}, nil
	})
}
