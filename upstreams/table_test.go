package upstreams

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

func TestPickUnknownServiceAndEmptyService(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	if _, err := tb.Pick("nope", nil); !errors.Is(err, ErrNoService) {
		t.Fatalf("unknown service: err = %v, want ErrNoService", err)
	}
	addService(t, tb, Service{Name: "web"})
	if _, err := tb.Pick("web", nil); !errors.Is(err, ErrNoUpstream) {
		t.Fatalf("service without upstreams: err = %v, want ErrNoUpstream", err)
	}
}

func TestUpstreamBeforeServiceIsAttachedLater(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	tb.PutUpstream(Upstream{Service: "web", ID: "a", Addr: "127.0.0.1:80"})
	if _, err := tb.Pick("web", nil); !errors.Is(err, ErrNoService) {
		t.Fatalf("before the service: err = %v, want ErrNoService", err)
	}
	tb.PutService(Service{Name: "web"})
	h := mustPick(t, tb, "web", nil)
	if h.Addr() != "127.0.0.1:80" || h.Service() != "web" || h.ID() != "a" {
		t.Fatalf("picked %s %s/%s", h.Addr(), h.Service(), h.ID())
	}
	h.Release()
}

func TestRemoveServiceRemovesItsUpstreams(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	addService(t, tb, Service{Name: "web"}, 1, 1)
	tb.RemoveService("web")
	if _, ok := tb.Service("web"); ok {
		t.Fatal("service still present")
	}
	tb.PutService(Service{Name: "web"})
	if _, err := tb.Pick("web", nil); !errors.Is(err, ErrNoUpstream) {
		t.Fatalf("re-created service: err = %v, want ErrNoUpstream (upstreams went with it)", err)
	}
}

func TestRemoveUpstream(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	addService(t, tb, Service{Name: "web"}, 1, 1)
	tb.RemoveUpstream("web", "a")
	for _, id := range pickIDs(t, tb, "web", 10) {
		if id != "b" {
			t.Fatalf("picked removed upstream %s", id)
		}
	}
	tb.RemoveUpstream("web", "b")
	if _, err := tb.Pick("web", nil); !errors.Is(err, ErrNoUpstream) {
		t.Fatalf("err = %v, want ErrNoUpstream", err)
	}
}

func TestPutServiceKeepsUpstreamsAndCopies(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	s := Service{Name: "web", Hosts: []string{"example.com"}, HealthCheck: &HealthCheck{Path: "/health"}}
	addService(t, tb, s, 1)
	// Replacing the service changes its rules, not its upstreams.
	tb.PutService(Service{Name: "web", Protocol: ProtoHTTP, LB: LBLeastConn})
	got, ok := tb.Service("web")
	if !ok || got.LB != LBLeastConn || got.PathPrefix != "/" {
		t.Fatalf("service = %+v, %v", got, ok)
	}
	mustPick(t, tb, "web", nil).Release()

	// What the table hands out is a copy: changing it changes nothing.
	tb.PutService(s)
	got, _ = tb.Service("web")
	got.Hosts[0] = "evil.com"
	got.HealthCheck.Path = "/evil"
	again, _ := tb.Service("web")
	if again.Hosts[0] != "example.com" || again.HealthCheck.Path != "/health" {
		t.Fatalf("table changed through a returned copy: %+v %+v", again, again.HealthCheck)
	}
	// ... and so is what it was given.
	s.Hosts[0] = "other.com"
	again, _ = tb.Service("web")
	if again.Hosts[0] != "example.com" {
		t.Fatal("table changed through the caller's service")
	}
}

func TestPutServiceFillsDefaults(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	tb.PutService(Service{Name: "web", LB: "bogus", Hosts: []string{" Example.COM "}, HealthCheck: &HealthCheck{}})
	got, _ := tb.Service("web")
	want := Service{Name: "web", Protocol: ProtoHTTP, LB: LBRoundRobin, PathPrefix: "/", Hosts: []string{"example.com"},
		HealthCheck: &HealthCheck{Path: "/", Interval: Duration(DefaultCheckInterval), Timeout: Duration(DefaultCheckTimeout)}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("service = %+v %+v\nwant %+v %+v", got, got.HealthCheck, want, want.HealthCheck)
	}
}

func TestSetStateBeforePutUpstream(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	tb.SetState("web", "a", StateDraining)
	addService(t, tb, Service{Name: "web"}, 1, 1)
	for _, id := range pickIDs(t, tb, "web", 10) {
		if id == "a" {
			t.Fatal("picked a, drained before it was put")
		}
	}
	if v := viewOf(t, tb, "web", "a"); v.State != StateDraining {
		t.Fatalf("state = %s, want draining", v.State)
	}
	// Removal forgets the state: a new upstream of that id starts active.
	tb.RemoveUpstream("web", "a")
	tb.PutUpstream(Upstream{Service: "web", ID: "a", Addr: "127.0.0.1:80"})
	if v := viewOf(t, tb, "web", "a"); v.State != StateActive {
		t.Fatalf("after re-put: state = %s, want active", v.State)
	}
}

func TestSetHealthBeforePutUpstream(t *testing.T) {
	tb, _, hl := newTestTable(t, Config{})
	tb.SetHealth("web", "a", HealthDown)
	addService(t, tb, Service{Name: "web"}, 1, 1)
	if v := viewOf(t, tb, "web", "a"); v.Health != HealthDown {
		t.Fatalf("health = %s, want down", v.Health)
	}
	if ev := hl.list(); len(ev) != 0 {
		t.Fatalf("remote verdicts must not be reported: %v", ev)
	}
}

func TestPutUpstreamSameAddrKeepsLiveState(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	addService(t, tb, Service{Name: "web"}, 1)
	h := mustPick(t, tb, "web", nil)
	h.Failed(errors.New("refused"))
	tb.SetState("web", "a", StateDraining)

	tb.PutUpstream(Upstream{Service: "web", ID: "a", Addr: "127.0.0.1:80", Weight: 7})
	v := viewOf(t, tb, "web", "a")
	if v.InFlight != 1 || v.Health != HealthDown || v.State != StateDraining || v.Weight != 7 {
		t.Fatalf("after same-addr replace: %+v", v)
	}

	// A new address starts up, but the in-flight count and admin state
	// belong to the upstream and stay, so a drain remains truthful.
	tb.PutUpstream(Upstream{Service: "web", ID: "a", Addr: "127.0.0.9:80"})
	v = viewOf(t, tb, "web", "a")
	if v.InFlight != 1 || v.Health != HealthUp || v.State != StateDraining || v.Addr != "127.0.0.9:80" {
		t.Fatalf("after addr change: %+v", v)
	}
	h.Release()
	if v := viewOf(t, tb, "web", "a"); v.InFlight != 0 {
		t.Fatalf("in flight after release = %d", v.InFlight)
	}
}

func TestSnapshotAndInFlight(t *testing.T) {
	tb, _, _ := newTestTable(t, Config{})
	addService(t, tb, Service{Name: "web"}, 1, 1)
	addService(t, tb, Service{Name: "mail", Protocol: ProtoSMTP}, 1)
	h1 := mustPick(t, tb, "web", nil)
	h2 := mustPick(t, tb, "web", nil)
	h3 := mustPick(t, tb, "mail", nil)
	h3.Release()
	tb.SetState("web", "b", StateDraining)

	want := map[string]int64{"web/a": 1, "web/b": 1}
	if got := tb.InFlight(); !reflect.DeepEqual(got, want) {
		t.Fatalf("InFlight = %v, want %v", got, want)
	}
	snap := tb.Snapshot()
	if len(snap) != 2 || snap[0].Name != "mail" || snap[1].Name != "web" {
		t.Fatalf("snapshot order: %+v", snap)
	}
	web := snap[1].Upstreams
	if len(web) != 2 || web[0].ID != "a" || web[1].State != StateDraining || web[1].InFlight != 1 || web[0].Health != HealthUp {
		t.Fatalf("web upstreams: %+v", web)
	}
	b, err := json.Marshal(snap[1])
	if err != nil {
		t.Fatal(err)
	}
	var decoded map[string]any
	if err := json.Unmarshal(b, &decoded); err != nil {
		t.Fatal(err)
	}
	ups := decoded["upstreams"].([]any)
	first := ups[1].(map[string]any)
	if decoded["name"] != "web" || first["state"] != "draining" || first["in_flight"] != float64(1) || first["addr"] != "127.0.0.2:80" {
		t.Fatalf("json: %s", b)
	}
	h1.Release()
	h2.Release()
	h2.Release() // idempotent
	if got := tb.InFlight(); len(got) != 0 {
		t.Fatalf("InFlight after release = %v", got)
	}
	if names := tb.Services(); len(names) != 2 || names[0].Name != "mail" {
		t.Fatalf("Services = %+v", names)
	}
}

// viewOf returns the snapshot view of one upstream.
func viewOf(t *testing.T, tb *Table, service, id string) UpstreamView {
	t.Helper()
	for _, s := range tb.Snapshot() {
		if s.Name != service {
			continue
		}
		for _, u := range s.Upstreams {
			if u.ID == id {
				return u
			}
		}
	}
	t.Fatalf("no upstream %s/%s in snapshot", service, id)
	return UpstreamView{}
}

// TestRefsMatchCopies: the allocation-free lookups answer like Route and
// Service, and nil where those answer false.
func TestRefsMatchCopies(t *testing.T) {
	tab := NewTable(Config{})
	tab.PutService(Service{Name: "api", Protocol: ProtoHTTP, Hosts: []string{"api.example.com"}, PathPrefix: "/"})
	tab.PutService(Service{Name: "mail", Protocol: ProtoSMTP})
	if ref, s := tab.RouteRef("api.example.com", "/x"), "api"; ref == nil || ref.Name != s {
		t.Fatalf("RouteRef = %+v, want %s", ref, s)
	}
	if ref := tab.RouteRef("other.org", "/"); ref != nil {
		t.Fatalf("RouteRef for an unknown host = %+v, want nil", ref)
	}
	if ref := tab.ServiceRef("mail"); ref == nil || ref.Protocol != ProtoSMTP {
		t.Fatalf("ServiceRef(mail) = %+v", ref)
	}
	if ref := tab.ServiceRef("nosuch"); ref != nil {
		t.Fatalf("ServiceRef(nosuch) = %+v, want nil", ref)
	}
	if n := testing.AllocsPerRun(100, func() { tab.RouteRef("api.example.com", "/x"); tab.ServiceRef("api") }); n != 0 {
		t.Fatalf("refs allocate %v times", n)
	}
}
