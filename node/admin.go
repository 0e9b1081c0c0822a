package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"

	"vulcan/gossip"
	"vulcan/node/store"
	"vulcan/ratelimit"
	"vulcan/upstreams"
)

// Status is the answer of GET /v1/status.
type Status struct {
	Node    string `json:"node"`
	Members int    `json:"members"`
	Store   string `json:"store"`
	Version string `json:"version"`
}

// Status reports this node's identity and the size of the cluster.
func (n *Node) Status() Status {
	return Status{Node: n.cfg.Node, Members: n.cluster.Load().NumAlive(), Store: n.store.Kind(), Version: Version}
}

// Member is one member of the cluster as the admin API shows it; the JSON
// names are part of the API (GET /v1/members).
type Member struct {
	Name   string `json:"name"`
	Addr   string `json:"addr"`
	Status string `json:"status"` // alive, suspect, dead or left
}

// Members lists the cluster's members, this node included, sorted by name.
func (n *Node) Members() []Member {
	ms := n.cluster.Load().Members()
	out := make([]Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, Member{Name: m.Name, Addr: m.Addr, Status: m.Status})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ServiceView is a service with its upstreams, as the admin API shows it.
type ServiceView struct {
	Service
	Upstreams []UpstreamView `json:"upstreams"`
}

// UpstreamView is an upstream with its state, health and cluster-wide
// in-flight count.
type UpstreamView struct {
	ID       string               `json:"id"`
	Addr     string               `json:"addr"`
	Weight   int                  `json:"weight"`
	State    upstreams.AdminState `json:"state"`
	Health   upstreams.Health     `json:"health"`
	InFlight int64                `json:"in_flight"`
}

// Services lists every service with its upstreams, read from the replicated
// state, with health as this node sees it and in-flight counts summed over
// the alive members.
func (n *Node) Services() []ServiceView {
	c := n.cluster.Load()
	inflight := n.clusterInFlight()
	var out []ServiceView
	for _, e := range c.Entries(prefixService) {
		var v ServiceView
		if json.Unmarshal(e.Value, &v.Service) != nil {
			continue
		}
		v.Upstreams = n.upstreamViews(c, v.Name, inflight)
		out = append(out, v)
	}
	return out
}

// Service returns one service's view; ErrNotFound when unknown.
func (n *Node) Service(name string) (ServiceView, error) {
	c := n.cluster.Load()
	e, ok := c.Get(serviceKey(name))
	if !ok {
		return ServiceView{}, fmt.Errorf("service %q: %w", name, ErrNotFound)
	}
	var v ServiceView
	if err := json.Unmarshal(e.Value, &v.Service); err != nil {
		return ServiceView{}, fmt.Errorf("service %q: %w", name, err)
	}
	v.Upstreams = n.upstreamViews(c, name, n.clusterInFlight())
	return v, nil
}

func (n *Node) upstreamViews(c *gossip.Cluster, svc string, inflight map[string]int64) []UpstreamView {
	out := []UpstreamView{}
	for _, e := range c.Entries(prefixUpstream + svc + "/") {
		var u upstreams.Upstream
		if json.Unmarshal(e.Value, &u) != nil {
			continue
		}
		v := UpstreamView{ID: u.ID, Addr: u.Addr, Weight: u.Weight, State: upstreams.StateActive, Health: upstreams.HealthUp,
			InFlight: inflight[upstreams.Key(svc, u.ID)]}
		if se, ok := c.Get(stateKey(svc, u.ID)); ok {
			v.State = upstreams.AdminState(se.Value)
		}
		if he, ok := c.Get(healthKey(svc, u.ID)); ok {
			v.Health = upstreams.Health(he.Value)
		}
		out = append(out, v)
	}
	return out
}

// PutService creates or replaces a service. Its upstreams are kept.
func (n *Node) PutService(svc Service) error {
	if err := svc.Normalize(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	b, err := json.Marshal(svc)
	if err != nil {
		return fmt.Errorf("encode service %s: %w", svc.Name, err)
	}
	n.persistNow(n.cluster.Load().Set(serviceKey(svc.Name), b))
	n.log.Info("service registered", "service", svc.Name, "protocol", svc.Protocol)
	return nil
}

// DeleteService removes a service and its upstreams.
func (n *Node) DeleteService(name string) error {
	c := n.cluster.Load()
	if _, ok := c.Get(serviceKey(name)); !ok {
		return fmt.Errorf("service %q: %w", name, ErrNotFound)
	}
	for _, p := range []string{prefixUpstream, prefixState, prefixHealth} {
		for _, e := range c.Entries(p + name + "/") {
			n.persist.mark(c.Delete(e.Key))
		}
	}
	n.persistNow(c.Delete(serviceKey(name)))
	n.log.Info("service removed", "service", name)
	return nil
}

// PutUpstream creates or replaces an upstream of an existing service.
func (n *Node) PutUpstream(u upstreams.Upstream) error {
	c := n.cluster.Load()
	if _, ok := c.Get(serviceKey(u.Service)); !ok {
		return fmt.Errorf("service %q: %w", u.Service, ErrNotFound)
	}
	if err := u.Normalize(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	b, err := json.Marshal(u)
	if err != nil {
		return fmt.Errorf("encode upstream %s: %w", u.ID, err)
	}
	n.persistNow(c.Set(upstreamKey(u.Service, u.ID), b))
	n.log.Info("upstream registered", "service", u.Service, "upstream", u.ID, "addr", u.Addr)
	return nil
}

// DeleteUpstream removes an upstream.
func (n *Node) DeleteUpstream(svc, id string) error {
	c := n.cluster.Load()
	if _, ok := c.Get(upstreamKey(svc, id)); !ok {
		return fmt.Errorf("upstream %s/%s: %w", svc, id, ErrNotFound)
	}
	n.persistNow(c.Delete(stateKey(svc, id)), c.Delete(healthKey(svc, id)), c.Delete(upstreamKey(svc, id)))
	n.log.Info("upstream removed", "service", svc, "upstream", id)
	return nil
}

// Drain stops new requests to an upstream on every node. With wait > 0 it
// returns when every alive member has applied the drain and has nothing in
// flight to the upstream (Done true), or when wait or ctx runs out (Done
// false, with the counts left).
func (n *Node) Drain(ctx context.Context, svc, id string, wait time.Duration) (DrainProgress, error) {
	e, err := n.setState(svc, id, upstreams.StateDraining)
	if err != nil {
		return DrainProgress{}, err
	}
	clock := e.Version.Clock
	if wait <= 0 {
		return n.drainProgress(svc, id, clock), nil
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		p := n.drainProgress(svc, id, clock)
		if p.Done {
			return p, nil
		}
		select {
		case <-ctx.Done():
			return n.drainProgress(svc, id, clock), nil
		case <-t.C:
		}
	}
}

// Enable returns a drained upstream to rotation.
func (n *Node) Enable(svc, id string) error {
	_, err := n.setState(svc, id, upstreams.StateActive)
	return err
}

// setState writes an upstream's admin state and returns the entry written.
func (n *Node) setState(svc, id string, s upstreams.AdminState) (gossip.Entry, error) {
	c := n.cluster.Load()
	if _, ok := c.Get(upstreamKey(svc, id)); !ok {
		if _, ok := c.Get(serviceKey(svc)); !ok {
			return gossip.Entry{}, fmt.Errorf("service %q: %w", svc, ErrNotFound)
		}
		return gossip.Entry{}, fmt.Errorf("upstream %s/%s: %w", svc, id, ErrNotFound)
	}
	e := c.Set(stateKey(svc, id), []byte(s))
	n.persistNow(e)
	n.log.Info("upstream state changed", "service", svc, "upstream", id, "state", s)
	return e, nil
}

// Limits lists the rate limits in force.
func (n *Node) Limits() []ratelimit.Limit {
	ls := n.limiter.Limits()
	sort.Slice(ls, func(i, j int) bool { return ls[i].ID < ls[j].ID })
	return ls
}

// AddLimit validates and stores a new limit, gives it an id, and tells the
// cluster; every node applies it within a couple of seconds.
func (n *Node) AddLimit(ctx context.Context, l ratelimit.Limit) (ratelimit.Limit, error) {
	l.ID = uuid.NewString()
	if err := ratelimit.Validate(l); err != nil {
		return l, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := checkLimitRange(l); err != nil {
		return l, err
	}
	if n.store.Kind() == store.KindCassandra {
		if err := n.store.PutLimit(ctx, l); err != nil {
			return l, fmt.Errorf("store limit: %w", err)
		}
		n.bumpLimitsRev()
	} else {
		b, err := json.Marshal(l)
		if err != nil {
			return l, fmt.Errorf("encode limit: %w", err)
		}
		n.persistNow(n.cluster.Load().Set(limitKey(l.ID), b))
	}
	n.log.Info("limit added", "id", l.ID, "period", l.Period, "threshold", l.Threshold)
	return l, n.reloadLimits(ctx)
}

// checkLimitRange refuses numbers that the seed's schema cannot hold: the
// Cassandra table stores data_size, period and threshold as 32-bit ints.
// Every store applies it, so that a limit accepted by a lone node would be
// accepted by a cluster too.
func checkLimitRange(l ratelimit.Limit) error {
	for _, f := range []struct {
		name string
		v    int64
	}{{"data_size", l.DataSize}, {"period", int64(l.Period)}, {"threshold", l.Threshold}} {
		if f.v > math.MaxInt32 {
			return fmt.Errorf("%w: %s: must be at most %d, got %d", ErrInvalid, f.name, math.MaxInt32, f.v)
		}
	}
	return nil
}

// DeleteLimit removes a limit everywhere.
func (n *Node) DeleteLimit(ctx context.Context, id string) error {
	if n.store.Kind() == store.KindCassandra {
		if err := n.store.DeleteLimit(ctx, id); err != nil {
			// The Cassandra store wraps ErrNotFound with the statement's
			// context, so compare through the chain.
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("limit %q: %w", id, ErrNotFound)
			}
			return fmt.Errorf("delete limit: %w", err)
		}
		n.bumpLimitsRev()
	} else {
		c := n.cluster.Load()
		if _, ok := c.Get(limitKey(id)); !ok {
			return fmt.Errorf("limit %q: %w", id, ErrNotFound)
		}
		n.persistNow(c.Delete(limitKey(id)))
	}
	n.log.Info("limit removed", "id", id)
	return n.reloadLimits(ctx)
}

func (n *Node) bumpLimitsRev() {
	n.cluster.Load().Set(keyLimitsRev, []byte(uuid.NewString()))
}

// reloadLimits reads the limits from where they live (the Cassandra table,
// or the replicated state on an embedded store) into the limiter.
func (n *Node) reloadLimits(ctx context.Context) error {
	var ls []ratelimit.Limit
	if n.store.Kind() == store.KindCassandra {
		var err error
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if ls, err = n.store.ListLimits(ctx); err != nil {
			return fmt.Errorf("load limits: %w", err)
		}
	} else if c := n.cluster.Load(); c != nil {
		for _, e := range c.Entries(prefixLimit) {
			var l ratelimit.Limit
			if json.Unmarshal(e.Value, &l) == nil && strings.TrimPrefix(e.Key, prefixLimit) == l.ID {
				ls = append(ls, l)
			}
		}
	}
	var valid []ratelimit.Limit
	for _, l := range ls {
		if err := ratelimit.Validate(l); err != nil {
			n.log.Warn("ignoring invalid stored limit", "id", l.ID, "error", err)
			continue
		}
		valid = append(valid, l)
	}
	if err := n.limiter.SetLimits(valid); err != nil {
		return fmt.Errorf("apply limits: %w", err)
	}
	return nil
}

// limitsChanged is called from gossip when a limit or the change notice
// arrives; the reload runs on limitLoop, off gossip's goroutine.
func (n *Node) limitsChanged() {
	select {
	case n.limitsWake <- struct{}{}:
	default:
	}
}

// limitLoop reloads the limits when told to, and on Cassandra also every
// limitPoll in case a notice was lost.
func (n *Node) limitLoop(ctx context.Context) {
	// Within the 2 s a limit change is promised to take: a lost notice (a
	// node that missed the gossip wave waits for push/pull, ~10 s) is
	// covered by the poll. The read is one small table, and an unchanged
	// set is a no-op in the limiter.
	const limitPoll = 2 * time.Second
	t := time.NewTicker(limitPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.limitsWake:
		case <-t.C:
			if n.store.Kind() != store.KindCassandra {
				continue
			}
		}
		if err := n.reloadLimits(ctx); err != nil {
			n.log.Warn("reload limits", "error", err)
		}
	}
}

// persistNow writes this node's pending state changes before an admin call
// answers, so that a write acknowledged to an operator is on disk (or in
// Cassandra) even if every node is killed right after.
func (n *Node) persistNow(written ...gossip.Entry) {
	for _, e := range written {
		n.persist.mark(e)
	}
	n.persist.flush(n.ctx)
}
