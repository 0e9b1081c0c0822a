package upstreams

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// adhocIdle is how long an explicit address must go unused before it is
// evicted ahead of the least recently used one.
const adhocIdle = time.Minute

// PickAddrs chooses, round robin, one usable address of an explicit list
// such as the auth server may answer. An address that a registered upstream
// has obeys that upstream's admin state and health, and counts in its
// in-flight count (if several upstreams share the address, the first by
// service and id). Any other address is tracked in a bounded ad-hoc set
// with passive health only. exclude, if not nil, is avoided unless nothing
// else is usable. Blank and malformed entries are ignored.
func (t *Table) PickAddrs(addrs []string, exclude *Handle) (*Handle, error) {
	snap := t.snap.Load()
	now := clockReading{t: t}
	var buf [16]*member
	ms := buf[:0]
	for _, a := range addrs {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		m := snap.byAddr[a]
		if m == nil {
			m = t.adhoc.get(a, now.get())
		}
		if m != nil {
			ms = append(ms, m)
		}
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("pick from %q: %w", addrs, ErrNoUpstream)
	}
	// One cursor per list (by hash), so that interleaved lists do not
	// disturb each other's rotation.
	n := t.cursors[hashAddrs(addrs)%uint32(len(t.cursors))].Add(1) - 1
	ex := excludedAddr(exclude)
	var sbuf [4]*member
	skip := sbuf[:0]
	for {
		m, trial := nthUsable(ms, n, ex, skip, &now)
		if m == nil && ex != "" {
			ex = ""
			m, trial = nthUsable(ms, n, ex, skip, &now)
		}
		if m == nil {
			return nil, fmt.Errorf("pick from %q: %w", addrs, ErrNoUpstream)
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

// nthUsable returns the (n mod count)-th of the usable members, so that a
// rotating n spreads picks evenly over whichever are usable right now.
func nthUsable(ms []*member, n uint32, ex string, skip []*member, now *clockReading) (*member, bool) {
	count := uint32(0)
	for _, m := range ms {
		if ok, _ := eligible(m, ex, skip, now); ok {
			count++
		}
	}
	if count == 0 {
		return nil, false
	}
	k := n % count
	for _, m := range ms {
		ok, trial := eligible(m, ex, skip, now)
		if !ok {
			continue
		}
		if k == 0 {
			return m, trial
		}
		k--
	}
	return nil, false
}

func eligible(m *member, ex string, skip []*member, now *clockReading) (ok, trial bool) {
	if m.addr == ex || skipped(skip, m) {
		return false, false
	}
	return m.usable(now)
}

// hashAddrs is FNV-1a over the list, with a separator between entries.
func hashAddrs(addrs []string) uint32 {
	h := uint32(2166136261)
	for _, a := range addrs {
		for i := 0; i < len(a); i++ {
			h ^= uint32(a[i])
			h *= 16777619
		}
		h ^= ','
		h *= 16777619
	}
	return h
}

// adhocSet remembers the explicit addresses that no upstream has, so that
// their passive health outlives a single request. It holds at most
// Config.MaxAdHoc entries: when full, idle entries are evicted, and if all
// are busy a new address is served untracked.
type adhocSet struct {
	t       *Table
	entries sync.Map // addr -> *adhocEntry; read without locking
	mu      sync.Mutex
	n       int // entries stored, guarded by mu
}

type adhocEntry struct {
	m    *member
	used atomic.Int64 // clock reading of the last list that named it
}

// get returns the member for addr, creating it if needed, or nil if addr is
// not host:port.
func (a *adhocSet) get(addr string, now int64) *member {
	if v, ok := a.entries.Load(addr); ok {
		e := v.(*adhocEntry)
		e.used.Store(now)
		return e.m
	}
	if err := ValidAddr(addr); err != nil {
		a.t.log.Debug("ignoring explicit upstream", "error", err)
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if v, ok := a.entries.Load(addr); ok {
		e := v.(*adhocEntry)
		e.used.Store(now)
		return e.m
	}
	addr = strings.Clone(addr) // the caller's string may pin a larger buffer
	m := &member{t: a.t, addr: addr, weight: 1, l: &live{}, h: &target{}}
	if a.n >= a.t.cfg.MaxAdHoc && !a.evict(now) {
		return m
	}
	e := &adhocEntry{m: m}
	e.used.Store(now)
	a.entries.Store(addr, e)
	a.n++
	return m
}

// evict makes room: every entry idle for adhocIdle goes, or else the least
// recently used one with nothing in flight. It reports whether there is room
// now. Called with mu held.
func (a *adhocSet) evict(now int64) bool {
	var lru *adhocEntry
	var lruKey any
	a.entries.Range(func(k, v any) bool {
		e := v.(*adhocEntry)
		if e.m.l.inflight.Load() != 0 {
			return true
		}
		used := e.used.Load()
		if now-used >= int64(adhocIdle) {
			a.entries.Delete(k)
			a.n--
			return true
		}
		if lru == nil || used < lru.used.Load() {
			lru, lruKey = e, k
		}
		return true
	})
	if a.n >= a.t.cfg.MaxAdHoc && lru != nil {
		a.entries.Delete(lruKey)
		a.n--
	}
	return a.n < a.t.cfg.MaxAdHoc
}

// len reports how many addresses are tracked.
func (a *adhocSet) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}
