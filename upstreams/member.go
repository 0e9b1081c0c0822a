package upstreams

import (
	"sync"
	"sync/atomic"
	"time"
)

// live is the state of an upstream that belongs to its identity
// (service/id) and survives any replacement of its registration: what a
// drain is judged by.
type live struct {
	inflight atomic.Int64
	draining atomic.Bool
	// picks counts the requests and sessions sent to the upstream, and
	// failures those whose connection failed (health checks aside), for
	// metrics.
	picks, failures atomic.Uint64
}

// target is the state of an upstream that belongs to its address: health
// and its place in the round-robin rotation. A new address gets a new target.
type target struct {
	// mu serializes health transitions; picks read the atomics only.
	mu sync.Mutex
	// down is written last in a transition to down, so that a reader that
	// sees it also sees the retryAt that goes with it.
	down atomic.Bool
	// retryAt is the clock reading from which a trial request may be sent.
	retryAt atomic.Int64
	backoff int64 // guarded by mu
	// gone is set when the target leaves the table: its verdicts are no
	// longer reported.
	gone atomic.Bool
	// cw is the smooth weighted round-robin current weight, guarded by the
	// owning service's svcShared.mu.
	cw int64
}

// member is one upstream as one snapshot sees it. It is immutable; the
// mutable state is behind l and h, which snapshots share.
type member struct {
	t                 *Table
	service, id, addr string
	key               string // "" for an explicit address no upstream has
	weight            int64
	// checked means an active health check owns recovery: no trials.
	checked bool
	l       *live
	h       *target
}

// clockReading reads the table clock at most once, and only if asked: most
// picks never need the time.
type clockReading struct {
	t   *Table
	v   int64
	set bool
}

func (c *clockReading) get() int64 {
	if !c.set {
		c.v, c.set = c.t.clock(), true
	}
	return c.v
}

// usable reports whether m may be picked, and whether doing so would be a
// trial of a down upstream whose backoff has expired. Trials are only for
// upstreams that no active check watches.
func (m *member) usable(now *clockReading) (ok, trial bool) {
	if m.l.draining.Load() {
		return false, false
	}
	if !m.h.down.Load() {
		return true, false
	}
	if m.checked {
		return false, false
	}
	return m.h.retryAt.Load() <= now.get(), true
}

// acquire counts a request in flight to m unless m is draining.
//
// Drain safety: the increment comes BEFORE the admin state is read, and both
// are sequentially consistent atomics. A drainer stores draining and then
// reads the count. If it reads zero, every pick that has not yet incremented
// will, after incrementing, read draining and back out; every pick that
// incremented earlier and saw active is still counted (it has not been
// released) so the drainer cannot have read zero. Hence "draining applied
// and zero in flight" can never be observed while a request may still go to
// m. Checking first and counting afterwards would open a window in which a
// pick has passed the check but is not yet counted.
func (m *member) acquire() bool {
	m.l.inflight.Add(1)
	if m.l.draining.Load() {
		m.l.inflight.Add(-1)
		return false
	}
	return true
}

// claimTrial reserves the one trial allowed per backoff period by moving
// retryAt forward. It reports whether the pick may proceed and whether it is
// still a trial (the upstream may have come back meanwhile).
func (m *member) claimTrial(now int64) (ok, trial bool) {
	h := m.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.down.Load() {
		return true, false
	}
	if h.retryAt.Load() > now {
		return false, false
	}
	h.retryAt.Store(now + h.backoff)
	return true, true
}

// fail records a connection failure. An up upstream goes down for the base
// backoff; a failed trial doubles the backoff, up to the maximum.
func (m *member) fail(trial bool, err error) {
	cfg := &m.t.cfg
	now := m.t.clock()
	h := m.h
	h.mu.Lock()
	wentDown := !h.down.Load()
	switch {
	case wentDown:
		h.backoff = int64(cfg.DownBackoff)
		h.retryAt.Store(now + h.backoff)
		h.down.Store(true)
	case trial:
		h.backoff = min(2*h.backoff, int64(cfg.MaxDownBackoff))
		h.retryAt.Store(now + h.backoff)
	}
	backoff := h.backoff
	h.mu.Unlock()
	if wentDown {
		m.t.log.Warn("upstream down", "service", m.service, "id", m.id, "addr", m.addr, "error", err)
		m.report(HealthDown)
	} else if trial {
		m.t.log.Debug("upstream trial failed", "service", m.service, "id", m.id, "addr", m.addr,
			"retry_in", time.Duration(backoff), "error", err)
	}
}

// recover brings a down upstream up: a successful trial or a passing check.
func (m *member) recover() {
	h := m.h
	h.mu.Lock()
	cameUp := h.down.Load()
	if cameUp {
		h.down.Store(false)
		h.backoff = 0
	}
	h.mu.Unlock()
	if cameUp {
		m.t.log.Info("upstream up", "service", m.service, "id", m.id, "addr", m.addr)
		m.report(HealthUp)
	}
}

// report tells OnHealth about a change this node observed.
func (m *member) report(h Health) {
	if m.key == "" || m.h.gone.Load() || m.t.cfg.OnHealth == nil {
		return
	}
	m.t.cfg.OnHealth(m.service, m.id, h)
}

// setRemote applies another node's verdict. Down rests the target for the
// base backoff unless it is already down here, where the local backoff,
// which may have grown through failed trials, is kept.
func (h *target) setRemote(v Health, now int64, base time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch v {
	case HealthDown:
		if !h.down.Load() {
			h.backoff = int64(base)
			h.retryAt.Store(now + h.backoff)
			h.down.Store(true)
		}
	case HealthUp:
		h.down.Store(false)
		h.backoff = 0
	}
}

// health reports the target's health as a verdict.
func (h *target) health() Health {
	if h.down.Load() {
		return HealthDown
	}
	return HealthUp
}
