package gossip

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The default run is small; measure a big cluster with, for instance:
//
//	go test -run TestPropagation -v ./gossip -propagation.nodes=100
var (
	propNodes     = flag.Int("propagation.nodes", 5, "nodes in TestPropagation")
	propChanges   = flag.Int("propagation.changes", 50, "changes made by TestPropagation, each on a random node")
	propEvery     = flag.Duration("propagation.every", 50*time.Millisecond, "pause between two changes")
	propPushNodes = flag.Int("propagation.pushnodes", 0, "Config.PushNodes (0: default, -1: gossip only)")
	propMaxP99    = flag.Duration("propagation.maxp99", 0, "fail when the p99 exceeds this (0: report only)")
	propProbe     = flag.Duration("propagation.probe", 0, "Config.ProbeInterval, ProbeTimeout half of it (0: defaults); a slower failure detector keeps a crowded host from flooding the cluster with false suspicions")
)

// propRecorder times each change from its Set until every node has applied
// it.
type propRecorder struct {
	nodes int

	mu      sync.Mutex
	start   map[string]time.Time
	seen    map[string]int
	latency map[string]time.Duration
}

func newPropRecorder(nodes int) *propRecorder {
	return &propRecorder{nodes: nodes, start: map[string]time.Time{}, seen: map[string]int{}, latency: map[string]time.Duration{}}
}

func (r *propRecorder) begin(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.start[key] = time.Now()
}

// arrive is every node's OnChange.
func (r *propRecorder) arrive(e Entry) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	start, ok := r.start[e.Key]
	if !ok {
		return
	}
	r.seen[e.Key]++
	if r.seen[e.Key] == r.nodes {
		r.latency[e.Key] = now.Sub(start)
	}
}

func (r *propRecorder) done() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.latency)
}

func (r *propRecorder) latencies() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]time.Duration, 0, len(r.latency))
	for _, d := range r.latency {
		out = append(out, d)
	}
	slices.Sort(out)
	return out
}

// processCPU is the CPU time used by this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// percentile returns the q-quantile of sorted, nearest rank.
func percentile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}

// TestPropagation starts N encrypted nodes with the default timings on
// 127.0.0.1, makes changes on random nodes and reports how long each took to
// be applied by every node.
func TestPropagation(t *testing.T) {
	n, changes := *propNodes, *propChanges
	if n < 2 || changes < 1 {
		t.Fatalf("need at least 2 nodes and 1 change, have %d and %d", n, changes)
	}
	rec := newPropRecorder(n)
	logger := testLogger(t)
	key := []byte("propagation-key!")
	cs := make([]*Cluster, n)
	for i := range n {
		cfg := Config{
			NodeName:          fmt.Sprintf("p%03d", i),
			BindAddr:          "127.0.0.1:0",
			Logger:            logger,
			SecretKey:         key,
			OnChange:          rec.arrive,
			PushNodes:         *propPushNodes,
			JoinRetryInterval: 100 * time.Millisecond,
			ProbeInterval:     *propProbe,
			ProbeTimeout:      *propProbe / 2,
		}
		if i > 0 {
			// Joining random earlier nodes spreads the joins' push/pulls.
			cfg.Join = []string{cs[rand.IntN(i)].LocalAddr()}
		}
		cs[i] = start(t, cfg)
		if i > 0 {
			// Nodes come up one after another, as in a rolling start: a
			// hundred joins at once in one process flood memberlist with
			// alive messages and starve its failure detector.
			waitFor(t, 10*time.Second, cfg.NodeName+" to join", func() bool { return cs[i].NumAlive() > 1 })
		}
	}
	formed := time.Now()
	waitFor(t, max(30*time.Second, time.Duration(n)*time.Second), fmt.Sprintf("%d alive members everywhere", n), func() bool {
		for _, c := range cs {
			if c.NumAlive() != n {
				return false
			}
		}
		return true
	})
	t.Logf("%d nodes all saw each other %v after the last one started", n, time.Since(formed).Round(time.Millisecond))

	cpu0, wall0 := processCPU(), time.Now()
	pace := time.NewTicker(*propEvery)
	defer pace.Stop()
	for i := range changes {
		k := fmt.Sprintf("prop/%04d", i)
		rec.begin(k)
		cs[rand.IntN(n)].Set(k, []byte(`{"addr":"10.0.0.1:8080","weight":1}`))
		<-pace.C
	}
	waitFor(t, 30*time.Second, fmt.Sprintf("%d changes on all %d nodes", changes, n), func() bool {
		return rec.done() == changes
	})

	cpu, wall := processCPU()-cpu0, time.Since(wall0)
	t.Logf("changes phase: %v wall, %v CPU for the whole simulated cluster (%.0f%% of one core)",
		wall.Round(time.Millisecond), cpu.Round(time.Millisecond), 100*cpu.Seconds()/wall.Seconds())
	lat := rec.latencies()
	p50, p99 := percentile(lat, 0.50), percentile(lat, 0.99)
	t.Logf("nodes=%d changes=%d pushnodes=%d probe=%v: p50=%v p99=%v max=%v",
		n, changes, cs[0].cfg.PushNodes, cs[0].cfg.ProbeInterval, p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond))
	if *propMaxP99 > 0 && p99 > *propMaxP99 {
		t.Errorf("p99 %v exceeds %v", p99, *propMaxP99)
	}
}
