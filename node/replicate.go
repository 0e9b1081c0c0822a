package node

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"vulcan/gossip"
	"vulcan/node/store"
	"vulcan/upstreams"
)

// Keys of the replicated state. Everything but reports is persisted.
const (
	prefixService  = "svc/"    // svc/NAME → Service JSON
	prefixUpstream = "up/"     // up/SERVICE/ID → Upstream JSON
	prefixState    = "state/"  // state/SERVICE/ID → "active" | "draining"
	prefixHealth   = "health/" // health/SERVICE/ID → "up" | "down"
	prefixReport   = "report/" // report/NODE → nodeReport JSON (not persisted)
	prefixLimit    = "limit/"  // limit/ID → Limit JSON (embedded store only)
	keyLimitsRev   = "limits-rev"
)

func serviceKey(name string) string       { return prefixService + name }
func upstreamKey(svc, id string) string   { return prefixUpstream + svc + "/" + id }
func stateKey(svc, id string) string      { return prefixState + svc + "/" + id }
func healthKey(svc, id string) string     { return prefixHealth + svc + "/" + id }
func reportKey(node string) string        { return prefixReport + node }
func limitKey(id string) string           { return prefixLimit + id }
func splitPair(rest string) (a, b string) { a, b, _ = strings.Cut(rest, "/"); return }

// onChange is the gossip observer: it applies the entry to the table and
// queues it for the store. It runs on gossip's goroutines, so it only does
// in-memory work.
func (n *Node) onChange(e gossip.Entry) {
	if n.cluster.Load() == nil {
		// Still inside gossip.New: loadState applies everything afterwards.
		if !strings.HasPrefix(e.Key, prefixReport) {
			n.persist.mark(e)
		}
		return
	}
	switch {
	case strings.HasPrefix(e.Key, prefixReport):
		n.reports.apply(e)
		return
	case strings.HasPrefix(e.Key, prefixService):
		n.applyService(strings.TrimPrefix(e.Key, prefixService))
	case strings.HasPrefix(e.Key, prefixUpstream):
		n.applyUpstream(splitPair(strings.TrimPrefix(e.Key, prefixUpstream)))
	case strings.HasPrefix(e.Key, prefixState):
		n.applyUpstream(splitPair(strings.TrimPrefix(e.Key, prefixState)))
		n.reports.kick()
	case strings.HasPrefix(e.Key, prefixHealth):
		svc, id := splitPair(strings.TrimPrefix(e.Key, prefixHealth))
		if !e.Deleted {
			n.applyMu.Lock()
			n.table.SetHealth(svc, id, upstreams.Health(e.Value))
			n.applyMu.Unlock()
		}
	case strings.HasPrefix(e.Key, prefixLimit), e.Key == keyLimitsRev:
		n.limitsChanged()
	}
	n.persist.mark(e)
}

func (n *Node) onMember(m gossip.Member) {
	n.log.Info("member", "name", m.Name, "addr", m.Addr, "status", m.Status)
	n.reports.kick()
}

// applyAll brings the table in line with the whole replicated state.
func (n *Node) applyAll() {
	c := n.cluster.Load()
	for _, e := range c.Entries(prefixService) {
		n.applyService(strings.TrimPrefix(e.Key, prefixService))
	}
	for _, e := range c.Entries(prefixReport) {
		n.reports.apply(e)
	}
}

// applyService puts or removes a service and then every upstream of it, so
// that entries arriving in any order end in the same table.
func (n *Node) applyService(name string) {
	c := n.cluster.Load()
	n.applyMu.Lock()
	defer n.applyMu.Unlock()
	e, ok := c.Get(serviceKey(name))
	var svc upstreams.Service
	if ok && json.Unmarshal(e.Value, &svc) == nil && svc.Normalize() == nil {
		n.table.PutService(svc)
	} else {
		n.table.RemoveService(name)
		n.reports.setDraining(name, "", 0, false)
		return
	}
	seen := map[string]bool{}
	for _, ue := range c.Entries(prefixUpstream + name + "/") {
		_, id := splitPair(strings.TrimPrefix(ue.Key, prefixUpstream))
		seen[id] = true
		n.applyUpstreamLocked(c, name, id)
	}
	for _, v := range n.table.Snapshot() {
		if v.Name != name {
			continue
		}
		for _, u := range v.Upstreams {
			if !seen[u.ID] {
				n.table.RemoveUpstream(name, u.ID)
			}
		}
	}
}

func (n *Node) applyUpstream(svc, id string) {
	c := n.cluster.Load()
	n.applyMu.Lock()
	defer n.applyMu.Unlock()
	if _, ok := c.Get(serviceKey(svc)); !ok {
		return
	}
	n.applyUpstreamLocked(c, svc, id)
}

func (n *Node) applyUpstreamLocked(c *gossip.Cluster, svc, id string) {
	e, ok := c.Get(upstreamKey(svc, id))
	var u upstreams.Upstream
	if !ok || json.Unmarshal(e.Value, &u) != nil || u.Normalize() != nil {
		n.table.RemoveUpstream(svc, id)
		n.reports.setDraining(svc, id, 0, false)
		return
	}
	state := upstreams.StateActive
	var drainClock uint64
	if se, ok := c.Get(stateKey(svc, id)); ok && upstreams.AdminState(se.Value) == upstreams.StateDraining {
		state, drainClock = upstreams.StateDraining, se.Version.Clock
	}
	// State first: an upstream must never be visible as active, even for an
	// instant, when the cluster says it is draining.
	n.table.SetState(svc, id, state)
	n.table.PutUpstream(u)
	if he, ok := c.Get(healthKey(svc, id)); ok {
		n.table.SetHealth(svc, id, upstreams.Health(he.Value))
	}
	n.reports.setDraining(svc, id, drainClock, state == upstreams.StateDraining)
}

// onLocalHealth is called by the table when this node observes a change of
// health; the verdict is shared with the whole cluster.
func (n *Node) onLocalHealth(svc, id string, h upstreams.Health) {
	c := n.cluster.Load()
	if c == nil {
		return
	}
	if e, ok := c.Get(healthKey(svc, id)); ok && upstreams.Health(e.Value) == h {
		return
	}
	n.log.Info("upstream health changed", "service", svc, "upstream", id, "health", h)
	c.Set(healthKey(svc, id), []byte(h))
}

// persister writes changed entries to the store from one goroutine, so that
// gossip's goroutines never wait on disk or Cassandra. Keys are coalesced:
// only the newest entry of a key is written. Tombstones are written like any
// entry: a delete must outlive a restart of every node that saw it, or a
// node that was down meanwhile brings the deleted entry back. They are
// removed from the store once past the tombstone grace, when gossip forgets
// them too.
type persister struct {
	st    store.Store
	log   hclog.Logger
	grace time.Duration
	mu    sync.Mutex
	dirty map[string]gossip.Entry
	wake  chan struct{}
	// writing is held for the whole of a flush, so that a flush returns
	// only once everything marked before it is in the store, even entries
	// another flush had already taken.
	writing sync.Mutex
}

// sweepInterval is how often expired tombstones are removed from the store.
const sweepInterval = time.Hour

func newPersister(st store.Store, grace time.Duration, log hclog.Logger) *persister {
	return &persister{st: st, grace: grace, log: log, dirty: map[string]gossip.Entry{}, wake: make(chan struct{}, 1)}
}

// mark queues e for the store. An entry is marked both when gossip
// applies it and by the admin call that wrote it, in no fixed order, so the
// newer of the two is kept.
func (p *persister) mark(e gossip.Entry) {
	p.mu.Lock()
	if old, ok := p.dirty[e.Key]; ok {
		e = gossip.Merge(old, e)
	}
	p.dirty[e.Key] = e
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *persister) run(ctx context.Context) {
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	sweep := time.NewTicker(sweepInterval)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		case <-retry.C:
		case <-sweep.C:
			p.sweep(ctx)
			continue
		}
		p.flush(ctx)
	}
}

// flush writes every dirty entry. Entries that fail stay dirty, unless a
// newer one was marked meanwhile, and are retried by run's ticker or at
// close.
func (p *persister) flush(ctx context.Context) {
	p.writing.Lock()
	defer p.writing.Unlock()
	p.mu.Lock()
	dirty := p.dirty
	p.dirty = map[string]gossip.Entry{}
	p.mu.Unlock()
	if len(dirty) == 0 {
		return
	}
	recs := make([]store.Record, 0, len(dirty))
	for _, e := range dirty {
		recs = append(recs, store.Record{Key: e.Key, Data: gossip.EncodeEntry(e)})
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := p.st.SaveState(wctx, recs...); err != nil {
		p.log.Error("persist replicated state", "entries", len(recs), "error", err)
		p.mu.Lock()
		for k, e := range dirty {
			if _, newer := p.dirty[k]; !newer {
				p.dirty[k] = e
			}
		}
		p.mu.Unlock()
	}
}

// expired reports whether e is a tombstone past the grace.
func (p *persister) expired(e gossip.Entry, now time.Time) bool {
	return e.Deleted && now.Sub(time.UnixMilli(e.DeletedAt)) > p.grace
}

// sweep removes the expired tombstones from the store. Only those: with a
// store shared by the cluster, a record this node does not hold may be
// another node's news.
func (p *persister) sweep(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	recs, err := p.st.LoadState(sctx)
	if err != nil {
		p.log.Warn("read state to sweep tombstones", "error", err)
		return
	}
	p.removeExpired(sctx, recs)
}

// removeExpired deletes the records holding expired tombstones.
func (p *persister) removeExpired(ctx context.Context, recs []store.Record) {
	now := time.Now()
	var del []string
	for _, r := range recs {
		if e, err := gossip.DecodeEntry(r.Data); err == nil && p.expired(e, now) {
			del = append(del, r.Key)
		}
	}
	if len(del) == 0 {
		return
	}
	if err := p.st.DeleteState(ctx, del...); err != nil {
		p.log.Warn("remove expired tombstones", "count", len(del), "error", err)
		return
	}
	p.log.Debug("removed expired tombstones", "count", len(del))
}
