package upstreams

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Defaults for Config.
const (
	DefaultDownBackoff    = time.Second
	DefaultMaxDownBackoff = 30 * time.Second
	DefaultMaxAdHoc       = 1024
	DefaultCheckHELO      = "localhost"
)

// Config configures a Table. The zero value is usable.
type Config struct {
	// Logger receives health transitions and check failures. Default: a
	// null logger.
	Logger hclog.Logger
	// OnHealth is called when this node observes an upstream change health:
	// a passive failure, an active check, a successful trial after a
	// backoff. It is called without locks held, from any goroutine, and must
	// not block. Verdicts applied through SetHealth are not reported, and
	// neither are those about explicit addresses that no upstream has.
	OnHealth func(service, id string, h Health)
	// DownBackoff is how long an upstream that failed passively rests before
	// a trial request may test it. Default 1s.
	DownBackoff time.Duration
	// MaxDownBackoff caps the doubling of the backoff after failed trials.
	// Default 30s.
	MaxDownBackoff time.Duration
	// MaxAdHoc bounds how many explicit addresses (named by the auth server
	// but not registered as upstreams) have their health remembered.
	// Default 1024.
	MaxAdHoc int
	// CheckHELO is the name the SMTP health check gives in EHLO. Default
	// "localhost".
	CheckHELO string
}

// Table is the live table of services and upstreams that both proxies route
// through. All methods are safe for concurrent use.
//
// Readers (Pick, PickAddrs, Route, Service, Snapshot) never lock the table:
// they load an immutable snapshot through an atomic pointer, and the live
// per-upstream state (in-flight count, admin state, health) is held in
// atomics that every snapshot shares. Registration changes, which are rare,
// rebuild the affected service and publish a new snapshot under mu.
type Table struct {
	cfg Config
	log hclog.Logger
	// clock reads a monotonic clock in nanoseconds; tests replace it.
	clock func() int64

	snap atomic.Pointer[snapshot]

	mu  sync.Mutex // serializes registration changes; never taken by a pick
	reg registry

	// chosenHook, if set (by tests only), runs between choosing an upstream
	// and counting it in flight: the window the drain protocol must cover.
	chosenHook func(*member)

	adhoc adhocSet
	// cursors are the round-robin positions of explicit address lists,
	// chosen by a hash of the list so that no list key is stored.
	cursors [64]atomic.Uint32
}

// registry is the table's source of truth, guarded by Table.mu. Snapshots
// are derived from it.
type registry struct {
	services map[string]Service
	ups      map[string]map[string]*entry // service -> id -> entry
	shared   map[string]*svcShared        // service -> state kept across snapshots
	// Admin states and remote health verdicts that arrived before their
	// upstream did, applied when it does.
	pendingState  map[string]AdminState
	pendingHealth map[string]Health
}

// entry is one registered upstream and its live state.
type entry struct {
	u Upstream
	l *live
	h *target
}

// snapshot is an immutable view of the registrations.
type snapshot struct {
	services map[string]*svc
	// byAddr maps an address to the registered upstream that explicit
	// address lists count against (the first by service, then id).
	byAddr map[string]*member
	router router
	// changed is closed when a newer snapshot replaces this one.
	changed chan struct{}
}

// svc is one service in a snapshot.
type svc struct {
	def     Service
	members []*member // sorted by id
	shared  *svcShared
}

// svcShared is the per-service selection state that outlives snapshots.
type svcShared struct {
	// mu guards the smooth round-robin weights (target.cw) of the
	// service's upstreams: the only lock on the pick path.
	mu sync.Mutex
	// next rotates the starting point of least_conn scans so that ties are
	// broken round robin.
	next atomic.Uint32
}

// NewTable returns an empty table.
func NewTable(cfg Config) *Table {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.DownBackoff <= 0 {
		cfg.DownBackoff = DefaultDownBackoff
	}
	if cfg.MaxDownBackoff <= 0 {
		cfg.MaxDownBackoff = DefaultMaxDownBackoff
	}
	if cfg.MaxDownBackoff < cfg.DownBackoff {
		cfg.MaxDownBackoff = cfg.DownBackoff
	}
	if cfg.MaxAdHoc <= 0 {
		cfg.MaxAdHoc = DefaultMaxAdHoc
	}
	if cfg.CheckHELO == "" {
		cfg.CheckHELO = DefaultCheckHELO
	}
	epoch := time.Now()
	t := &Table{
		cfg:   cfg,
		log:   cfg.Logger,
		clock: func() int64 { return int64(time.Since(epoch)) },
		reg: registry{
			services:      map[string]Service{},
			ups:           map[string]map[string]*entry{},
			shared:        map[string]*svcShared{},
			pendingState:  map[string]AdminState{},
			pendingHealth: map[string]Health{},
		},
	}
	t.adhoc.t = t
	t.snap.Store(&snapshot{
		services: map[string]*svc{},
		byAddr:   map[string]*member{},
		changed:  make(chan struct{}),
	})
	return t
}

// PutService creates or replaces a service. Its upstreams, and their live
// state, are kept.
func (t *Table) PutService(s Service) {
	s = s.withDefaults()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.reg.services[s.Name] = s
	t.publish(s.Name)
}

// RemoveService removes a service and its upstreams.
func (t *Table) RemoveService(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.reg.services, name)
	for _, e := range t.reg.ups[name] {
		e.h.gone.Store(true)
	}
	delete(t.reg.ups, name)
	delete(t.reg.shared, name)
	prefix := name + "/"
	for k := range t.reg.pendingState {
		if strings.HasPrefix(k, prefix) {
			delete(t.reg.pendingState, k)
		}
	}
	for k := range t.reg.pendingHealth {
		if strings.HasPrefix(k, prefix) {
			delete(t.reg.pendingHealth, k)
		}
	}
	t.publish(name)
}

// PutUpstream creates or replaces an upstream. An upstream may arrive before
// its service; it is routed to once the service exists.
//
// A replacement keeps the in-flight count and admin state, so that a drain
// stays truthful across it. Health is kept only if the address is unchanged:
// a new address starts up.
func (t *Table) PutUpstream(u Upstream) {
	if u.Weight <= 0 {
		u.Weight = 1
	}
	key := Key(u.Service, u.ID)
	t.mu.Lock()
	defer t.mu.Unlock()
	ids := t.reg.ups[u.Service]
	if ids == nil {
		ids = map[string]*entry{}
		t.reg.ups[u.Service] = ids
	}
	e := ids[u.ID]
	switch {
	case e == nil:
		e = &entry{l: &live{}, h: &target{}}
		ids[u.ID] = e
		if s, ok := t.reg.pendingState[key]; ok {
			e.l.draining.Store(s == StateDraining)
			delete(t.reg.pendingState, key)
		}
		if h, ok := t.reg.pendingHealth[key]; ok {
			e.h.setRemote(h, t.clock(), t.cfg.DownBackoff)
			delete(t.reg.pendingHealth, key)
		}
	case e.u.Addr != u.Addr:
		e.h.gone.Store(true)
		e.h = &target{}
	}
	e.u = u
	t.publish(u.Service)
}

// RemoveUpstream removes an upstream. Requests in flight to it finish; its
// remembered admin state is forgotten.
func (t *Table) RemoveUpstream(service, id string) {
	key := Key(service, id)
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.reg.pendingState, key)
	delete(t.reg.pendingHealth, key)
	ids := t.reg.ups[service]
	e := ids[id]
	if e == nil {
		return
	}
	e.h.gone.Store(true)
	delete(ids, id)
	if len(ids) == 0 {
		delete(t.reg.ups, service)
	}
	t.publish(service)
}

// SetState sets the admin state of an upstream. It may arrive before the
// upstream is put: it is remembered and applied then. Any state other than
// StateDraining counts as active.
//
// Once SetState(StateDraining) has returned, no Pick or PickAddrs returns
// the upstream, so an in-flight count of zero read afterwards (InFlight,
// Snapshot) means that nothing on this node is or will be sent to it.
func (t *Table) SetState(service, id string, s AdminState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.reg.ups[service][id]; e != nil {
		e.l.draining.Store(s == StateDraining)
		return
	}
	t.reg.pendingState[Key(service, id)] = s
}

// SetHealth applies a health verdict that another node observed. It does not
// call OnHealth. A verdict of down rests the upstream for the base backoff
// (unless it is already down here); up brings it back at once.
func (t *Table) SetHealth(service, id string, h Health) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.reg.ups[service][id]; e != nil {
		e.h.setRemote(h, t.clock(), t.cfg.DownBackoff)
		return
	}
	t.reg.pendingHealth[Key(service, id)] = h
}

// Service returns a copy of the named service.
func (t *Table) Service(name string) (Service, bool) {
	s := t.snap.Load().services[name]
	if s == nil {
		return Service{}, false
	}
	return s.def.clone(), true
}

// ServiceRef is Service without the copy, for the request path: the
// service belongs to an immutable snapshot and must not be modified. Nil
// when there is no such service.
func (t *Table) ServiceRef(name string) *Service {
	if s := t.snap.Load().services[name]; s != nil {
		return &s.def
	}
	return nil
}

// Services returns copies of all services, sorted by name.
func (t *Table) Services() []Service {
	snap := t.snap.Load()
	out := make([]Service, 0, len(snap.services))
	for _, s := range snap.sorted() {
		out = append(out, s.def.clone())
	}
	return out
}

// publish rebuilds the named service from the registry and publishes a new
// snapshot. The other services' entries are reused as they are. Called with
// t.mu held.
func (t *Table) publish(name string) {
	old := t.snap.Load()
	next := &snapshot{
		services: make(map[string]*svc, len(old.services)+1),
		changed:  make(chan struct{}),
	}
	for n, s := range old.services {
		if n != name {
			next.services[n] = s
		}
	}
	if s := t.buildService(name); s != nil {
		next.services[name] = s
	} else if t.reg.ups[name] == nil {
		delete(t.reg.shared, name)
	}
	next.byAddr = indexAddrs(next.services)
	next.router = buildRouter(next.services)
	t.snap.Store(next)
	close(old.changed)
}

// buildService makes the snapshot entry of a registered service, or returns
// nil if the service is not registered.
func (t *Table) buildService(name string) *svc {
	def, ok := t.reg.services[name]
	if !ok {
		return nil
	}
	sh := t.reg.shared[name]
	if sh == nil {
		sh = &svcShared{}
		t.reg.shared[name] = sh
	}
	s := &svc{def: def, shared: sh}
	for id, e := range t.reg.ups[name] {
		s.members = append(s.members, &member{
			t:       t,
			service: name,
			id:      id,
			addr:    e.u.Addr,
			key:     Key(name, id),
			weight:  int64(e.u.Weight),
			checked: def.HealthCheck != nil,
			l:       e.l,
			h:       e.h,
		})
	}
	slices.SortFunc(s.members, func(a, b *member) int { return strings.Compare(a.id, b.id) })
	return s
}

// indexAddrs maps each address to the registered upstream that explicit
// address lists count against: the first by service name, then id, so that
// every node makes the same choice.
func indexAddrs(services map[string]*svc) map[string]*member {
	idx := map[string]*member{}
	for _, s := range services {
		for _, m := range s.members {
			if cur, ok := idx[m.addr]; !ok || m.key < cur.key {
				idx[m.addr] = m
			}
		}
	}
	return idx
}

// sorted returns the snapshot's services ordered by name.
func (snap *snapshot) sorted() []*svc {
	out := make([]*svc, 0, len(snap.services))
	for _, s := range snap.services {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b *svc) int { return strings.Compare(a.def.Name, b.def.Name) })
	return out
}

// withDefaults returns a private copy of s with the defaults that Normalize
// would fill in, so that a service that skipped validation cannot break
// routing or the checks (a zero interval would panic a ticker).
func (s Service) withDefaults() Service {
	s = s.clone()
	if s.Protocol == "" {
		s.Protocol = ProtoHTTP
	}
	if s.LB != LBLeastConn {
		s.LB = LBRoundRobin
	}
	if s.PathPrefix == "" {
		s.PathPrefix = "/"
	}
	for i, h := range s.Hosts {
		s.Hosts[i] = strings.ToLower(strings.TrimSpace(h))
	}
	if hc := s.HealthCheck; hc != nil {
		if hc.Interval <= 0 {
			hc.Interval = Duration(DefaultCheckInterval)
		}
		if hc.Timeout <= 0 {
			hc.Timeout = Duration(DefaultCheckTimeout)
		}
		if s.Protocol == ProtoHTTP && hc.Path == "" {
			hc.Path = "/"
		}
	}
	return s
}

// clone returns a copy of s that shares no memory with it.
func (s Service) clone() Service {
	s.Hosts = slices.Clone(s.Hosts)
	if s.HealthCheck != nil {
		hc := *s.HealthCheck
		s.HealthCheck = &hc
	}
	if s.Retry != nil {
		r := *s.Retry
		s.Retry = &r
	}
	return s
}
