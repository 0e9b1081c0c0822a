package upstreams

import (
	"errors"
	"fmt"
)

// Errors of Pick and PickAddrs; they are wrapped with the service name.
var (
	// ErrNoService means the service is not registered.
	ErrNoService = errors.New("no such service")
	// ErrNoUpstream means no upstream is usable: none registered, or all
	// down or draining.
	ErrNoUpstream = errors.New("no usable upstream")
)

// Pick chooses an upstream of the service by the service's policy and counts
// a request in flight to it. Only active upstreams are chosen, and of those
// the ones up or, for a service without an active check, down with an
// expired backoff (a trial, one per backoff period). exclude, if not nil, is
// avoided (by address) unless nothing else is usable.
func (t *Table) Pick(service string, exclude *Handle) (*Handle, error) {
	s := t.snap.Load().services[service]
	if s == nil {
		return nil, fmt.Errorf("pick %s: %w", service, ErrNoService)
	}
	now := clockReading{t: t}
	ex := excludedAddr(exclude)
	// Each round that fails to take its choice adds it to skip, so the loop
	// ends within len(members)+1 rounds.
	var buf [4]*member
	skip := buf[:0]
	for {
		m, trial := s.choose(ex, skip, &now)
		if m == nil && ex != "" {
			ex = ""
			m, trial = s.choose(ex, skip, &now)
		}
		if m == nil {
			return nil, fmt.Errorf("pick %s: %w", service, ErrNoUpstream)
		}
		if t.chosenHook != nil {
			t.chosenHook(m)
		}
		if h := take(m, trial, &now); h != nil {
			return h, nil
		}
		skip = append(skip, m)
	}
}

// choose applies the service's policy to the usable members that are
// neither at address ex nor in skip.
func (s *svc) choose(ex string, skip []*member, now *clockReading) (*member, bool) {
	if s.def.LB == LBLeastConn {
		return s.leastConn(ex, skip, now)
	}
	return s.roundRobin(ex, skip, now)
}

// roundRobin is nginx's smooth weighted round robin: every candidate gains
// its weight, the richest is chosen and pays back the total. Over any run of
// picks each upstream's share follows its weight, without bursts.
func (s *svc) roundRobin(ex string, skip []*member, now *clockReading) (*member, bool) {
	s.shared.mu.Lock()
	defer s.shared.mu.Unlock()
	var best *member
	var bestTrial bool
	var total int64
	for _, m := range s.members {
		if m.addr == ex || skipped(skip, m) {
			continue
		}
		ok, trial := m.usable(now)
		if !ok {
			continue
		}
		m.h.cw += m.weight
		total += m.weight
		if best == nil || m.h.cw > best.h.cw {
			best, bestTrial = m, trial
		}
	}
	if best != nil {
		best.h.cw -= total
	}
	return best, bestTrial
}

// leastConn chooses the fewest requests in flight per unit of weight. The
// scan starts one further on each call, so that ties go round robin. It
// takes no lock: concurrent picks may choose alike, as with any
// least-connections balancer that reads counts without reserving them.
func (s *svc) leastConn(ex string, skip []*member, now *clockReading) (*member, bool) {
	n := len(s.members)
	if n == 0 {
		return nil, false
	}
	start := int(s.shared.next.Add(1) % uint32(n))
	var best *member
	var bestTrial bool
	var bestIn int64
	for i := range n {
		m := s.members[(start+i)%n]
		if m.addr == ex || skipped(skip, m) {
			continue
		}
		ok, trial := m.usable(now)
		if !ok {
			continue
		}
		in := m.l.inflight.Load()
		// in/weight < bestIn/bestWeight, without division.
		if best == nil || in*best.weight < bestIn*m.weight {
			best, bestTrial, bestIn = m, trial, in
		}
	}
	return best, bestTrial
}

// take counts a request in flight to m and returns its handle, or nil if m
// turned out to be draining, or its trial was claimed by another pick.
func take(m *member, trial bool, now *clockReading) *Handle {
	if !m.acquire() {
		return nil
	}
	if trial {
		ok, still := m.claimTrial(now.get())
		if !ok {
			m.l.inflight.Add(-1)
			return nil
		}
		trial = still
	}
	m.l.picks.Add(1)
	return &Handle{m: m, trial: trial}
}

// excludedAddr is the address a pick should avoid.
func excludedAddr(h *Handle) string {
	if h == nil {
		return ""
	}
	return h.m.addr
}

func skipped(skip []*member, m *member) bool {
	for _, s := range skip {
		if s == m {
			return true
		}
	}
	return false
}
