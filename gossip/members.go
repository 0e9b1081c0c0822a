package gossip

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Member statuses.
const (
	// StatusAlive is a member that answers.
	StatusAlive = "alive"
	// StatusSuspect completes the set of statuses callers may show, but is
	// not reported: memberlist keeps its suspicions to itself.
	StatusSuspect = "suspect"
	// StatusDead is a member that stopped answering without leaving.
	StatusDead = "dead"
	// StatusLeft is a member that announced its leave.
	StatusLeft = "left"
)

// Member is a node of the cluster as this node sees it. Status is one of
// StatusAlive, StatusDead and StatusLeft; memberlist keeps suspicion to
// itself, so a suspect member shows as alive until it is declared dead.
type Member struct {
	Name   string
	Addr   string // host:port of its gossip listener
	Status string
}

// memberState is what the view keeps about a member.
type memberState struct {
	Member
	instance uint64    // process instance, from the node metadata
	leaving  bool      // a leave intent of this instance was received
	since    time.Time // when Status last changed
}

// memberView is this node's list of members, kept from memberlist's events
// because memberlist forgets dead and left members and cannot tell which of
// the two a departed member is. It has its own lock so that it can be read
// from inside memberlist callbacks.
type memberView struct {
	mu sync.Mutex
	m  map[string]*memberState
	// alive is kept beside m because memberlist asks for it on every
	// packet it fills (TransmitLimitedQueue.NumNodes).
	nAlive atomic.Int64
}

func newMemberView() *memberView {
	return &memberView{m: make(map[string]*memberState)}
}

// alive records a join or an update; it reports whether anything visible
// changed.
func (v *memberView) alive(name, addr string, instance uint64, now time.Time) (Member, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	defer v.recountLocked()
	s, ok := v.m[name]
	if !ok {
		s = &memberState{Member: Member{Name: name}}
		v.m[name] = s
	}
	if s.instance != instance {
		s.instance = instance
		s.leaving = false
	}
	changed := !ok || s.Addr != addr || s.Status != StatusAlive
	s.Addr = addr
	if s.Status != StatusAlive {
		s.Status = StatusAlive
		s.since = now
	}
	return s.Member, changed
}

// gone records a member memberlist reports departed: left if it announced
// its leave, dead otherwise. It reports whether the status changed.
func (v *memberView) gone(name, addr string, now time.Time) (Member, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	defer v.recountLocked()
	s, ok := v.m[name]
	if !ok {
		s = &memberState{Member: Member{Name: name, Addr: addr}}
		v.m[name] = s
	}
	status := StatusDead
	if s.leaving {
		status = StatusLeft
	}
	if s.Status == status {
		return s.Member, false
	}
	s.Status = status
	s.since = now
	return s.Member, true
}

// leaveIntent records that a member announced its leave. fresh reports the
// first sighting of this intent, which is worth passing on; changed reports
// a member already seen dead that now turns out to have left.
func (v *memberView) leaveIntent(m leaveMsg, now time.Time) (mem Member, fresh, changed bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	defer v.recountLocked()
	s, ok := v.m[m.Node]
	if !ok || s.instance != m.Instance || s.leaving {
		return Member{}, false, false
	}
	s.leaving = true
	if s.Status == StatusDead {
		s.Status = StatusLeft
		s.since = now
		return s.Member, true, true
	}
	return s.Member, true, false
}

// left marks the local node as left, before memberlist reports it gone.
func (v *memberView) left(name string, now time.Time) (Member, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	defer v.recountLocked()
	s, ok := v.m[name]
	if !ok || s.Status == StatusLeft {
		return Member{}, false
	}
	s.leaving = true
	s.Status = StatusLeft
	s.since = now
	return s.Member, true
}

// reap forgets the members dead or left for longer than age.
func (v *memberView) reap(now time.Time, age time.Duration) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	defer v.recountLocked()
	n := 0
	for name, s := range v.m {
		if (s.Status == StatusDead || s.Status == StatusLeft) && now.Sub(s.since) > age {
			delete(v.m, name)
			n++
		}
	}
	return n
}

// list returns the members sorted by name.
func (v *memberView) list() []Member {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]Member, 0, len(v.m))
	for _, s := range v.m {
		out = append(out, s.Member)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// numAlive counts the alive members, this node included.
func (v *memberView) numAlive() int {
	return int(v.nAlive.Load())
}

// recountLocked refreshes the alive count; v.mu is held.
func (v *memberView) recountLocked() {
	n := 0
	for _, s := range v.m {
		if s.Status == StatusAlive {
			n++
		}
	}
	v.nAlive.Store(int64(n))
}
