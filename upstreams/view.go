package upstreams

// UpstreamView is an upstream with its state as this node sees it.
type UpstreamView struct {
	Upstream
	State  AdminState `json:"state"`
	Health Health     `json:"health"`
	// InFlight counts this node's requests only; the cluster-wide figure is
	// the sum over the nodes' gossiped counts.
	InFlight int64 `json:"in_flight"`
}

// ServiceView is a service with its upstreams.
type ServiceView struct {
	Service
	Upstreams []UpstreamView `json:"upstreams"`
}

// Snapshot returns every service with its upstreams, sorted by name and id.
// Each service is a private copy.
func (t *Table) Snapshot() []ServiceView {
	services := t.snap.Load().sorted()
	out := make([]ServiceView, 0, len(services))
	for _, s := range services {
		v := ServiceView{Service: s.def.clone(), Upstreams: make([]UpstreamView, 0, len(s.members))}
		for _, m := range s.members {
			v.Upstreams = append(v.Upstreams, m.view())
		}
		out = append(out, v)
	}
	return out
}

// InFlight returns this node's non-zero in-flight counts by Key(service, id),
// for the node to publish. Explicit addresses that no upstream has are not
// included.
func (t *Table) InFlight() map[string]int64 {
	out := map[string]int64{}
	for _, s := range t.snap.Load().services {
		for _, m := range s.members {
			if n := m.l.inflight.Load(); n != 0 {
				out[m.key] = n
			}
		}
	}
	return out
}

// Counts are an upstream's totals through this node since it started.
type Counts struct {
	// Picks counts the requests and sessions sent to the upstream.
	Picks uint64
	// Failures counts those whose connection failed (health checks aside).
	Failures uint64
}

// Counts returns the totals of every registered upstream by Key(service, id).
func (t *Table) Counts() map[string]Counts {
	out := map[string]Counts{}
	for _, s := range t.snap.Load().services {
		for _, m := range s.members {
			out[m.key] = Counts{Picks: m.l.picks.Load(), Failures: m.l.failures.Load()}
		}
	}
	return out
}

func (m *member) view() UpstreamView {
	state := StateActive
	if m.l.draining.Load() {
		state = StateDraining
	}
	return UpstreamView{
		Upstream: Upstream{Service: m.service, ID: m.id, Addr: m.addr, Weight: int(m.weight)},
		State:    state,
		Health:   m.h.health(),
		InFlight: m.l.inflight.Load(),
	}
}
