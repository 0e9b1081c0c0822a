package node

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"strings"
	"sync"
	"time"

	"vulcan/gossip"
	"vulcan/upstreams"
)

// reportInterval is how often a node publishes its in-flight counts when
// they change; drains are published at once.
const reportInterval = 100 * time.Millisecond

// nodeReport is what each node tells the cluster about itself: the requests
// it has in flight per upstream, and the upstreams it has applied a drain
// to, each with the Lamport clock of the drain it applied. A drain with wait
// is complete when every alive member reports that drain, or a later one,
// with nothing in flight. The clock is what tells a member that has applied
// this drain from one whose report still shows an earlier drain, lifted
// since by an enable that has not reached the waiting node.
type nodeReport struct {
	InFlight map[string]int64  `json:"in_flight,omitempty"`
	Draining map[string]uint64 `json:"draining,omitempty"`
}

// reports holds every node's last report, and the set of drains this node
// has applied.
type reports struct {
	mu     sync.RWMutex
	byNode map[string]nodeReport
	// draining is this node's applied drains, by upstreams.Key, each with
	// the clock of the state entry applied.
	draining map[string]uint64
	wake     chan struct{}
}

func newReports() *reports {
	return &reports{byNode: map[string]nodeReport{}, draining: map[string]uint64{}, wake: make(chan struct{}, 1)}
}

func (r *reports) apply(e gossip.Entry) {
	name := strings.TrimPrefix(e.Key, prefixReport)
	var rep nodeReport
	if !e.Deleted && json.Unmarshal(e.Value, &rep) != nil {
		return
	}
	r.mu.Lock()
	if e.Deleted {
		delete(r.byNode, name)
	} else {
		r.byNode[name] = rep
	}
	r.mu.Unlock()
}

// setDraining records that this node has applied the drain written at
// clock, or lifted a drain (on false); an empty id lifts every drain of the
// service.
func (r *reports) setDraining(svc, id string, clock uint64, on bool) {
	r.mu.Lock()
	changed := false
	if id == "" {
		for k := range r.draining {
			if strings.HasPrefix(k, svc+"/") {
				delete(r.draining, k)
				changed = true
			}
		}
	} else if key := upstreams.Key(svc, id); on {
		if c, ok := r.draining[key]; !ok || c != clock {
			r.draining[key] = clock
			changed = true
		}
	} else if _, ok := r.draining[key]; ok {
		delete(r.draining, key)
		changed = true
	}
	r.mu.Unlock()
	if changed {
		r.kick()
	}
}

func (r *reports) kick() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *reports) get(node string) (nodeReport, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	rep, ok := r.byNode[node]
	return rep, ok
}

// reportLoop publishes this node's report when it changes: at once after a
// drain is applied, otherwise at most every reportInterval. It publishes it
// again when the cluster holds another report under this node's name: the
// last one of an earlier process of the same name (killed with requests in
// flight, say) can carry a newer clock than this process's first reports,
// and would otherwise stand until the counts here next change.
func (n *Node) reportLoop(ctx context.Context) {
	t := time.NewTicker(reportInterval)
	defer t.Stop()
	var last nodeReport
	var lastRaw []byte
	published := false
	for {
		// The draining set is read before the in-flight counts: a pick
		// counts itself in flight before it looks at the admin state, so a
		// zero read after the drain was applied cannot hide a request.
		n.reports.mu.RLock()
		draining := maps.Clone(n.reports.draining)
		n.reports.mu.RUnlock()
		rep := nodeReport{InFlight: n.table.InFlight(), Draining: draining}
		c := n.cluster.Load()
		stale := false
		if published {
			e, ok := c.Get(reportKey(n.cfg.Node))
			stale = !ok || !bytes.Equal(e.Value, lastRaw)
		}
		if !published || stale || !maps.Equal(rep.InFlight, last.InFlight) || !maps.Equal(rep.Draining, last.Draining) {
			b, err := json.Marshal(rep)
			if err == nil {
				c.Set(reportKey(n.cfg.Node), b)
				last, lastRaw, published = rep, b, true
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.reports.wake:
		}
	}
}

// DrainProgress is, per alive member, whether it has applied the drain and
// how many requests it still has in flight to the upstream.
type DrainProgress struct {
	Done  bool             `json:"done"`
	Nodes []NodeDrainState `json:"nodes"`
}

// NodeDrainState is one member's view of a drain.
type NodeDrainState struct {
	Node     string `json:"node"`
	Applied  bool   `json:"applied"`
	InFlight int64  `json:"in_flight"`
}

// drainProgress reads every alive member's report: a member has applied
// the drain written at clock when it reports a drain at least as recent.
func (n *Node) drainProgress(svc, id string, clock uint64) DrainProgress {
	key := upstreams.Key(svc, id)
	p := DrainProgress{Done: true}
	for _, m := range n.cluster.Load().Members() {
		if m.Status != "alive" {
			continue
		}
		rep, ok := n.reports.get(m.Name)
		st := NodeDrainState{Node: m.Name}
		if ok {
			c, ok := rep.Draining[key]
			st.Applied = ok && c >= clock
			st.InFlight = rep.InFlight[key]
		}
		if !st.Applied || st.InFlight > 0 {
			p.Done = false
		}
		p.Nodes = append(p.Nodes, st)
	}
	return p
}

// clusterInFlight sums the in-flight counts of every alive member.
func (n *Node) clusterInFlight() map[string]int64 {
	sum := map[string]int64{}
	for _, m := range n.cluster.Load().Members() {
		if m.Status != "alive" {
			continue
		}
		rep, ok := n.reports.get(m.Name)
		if !ok {
			continue
		}
		for k, v := range rep.InFlight {
			sum[k] += v
		}
	}
	return sum
}
