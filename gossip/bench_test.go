package gossip

import (
	"fmt"
	"testing"
	"time"
)

// benchValue is the size of a typical upstream record.
var benchValue = []byte(`{"service":"web","id":"u1","addr":"10.0.0.1:8080","weight":1}`)

// filledCluster is an offline Cluster holding services*upstreams entries
// under "up/SERVICE/ID".
func filledCluster(b *testing.B, services, upstreams int) *Cluster {
	b.Helper()
	c := offlineCluster(b)
	var es []Entry
	for s := range services {
		for u := range upstreams {
			es = append(es, Entry{Key: fmt.Sprintf("up/svc%03d/u%03d", s, u), Value: benchValue, Version: Version{Clock: uint64(len(es) + 1), Node: "n"}})
		}
	}
	c.Load(es)
	return c
}

func BenchmarkMerge(b *testing.B) {
	x := Entry{Key: "k", Value: benchValue, Version: Version{Clock: 7, Node: "n1"}}
	y := Entry{Key: "k", Value: benchValue, Version: Version{Clock: 7, Node: "n2"}}
	b.ReportAllocs()
	for b.Loop() {
		x = Merge(x, y)
	}
}

func BenchmarkEncodeEntry(b *testing.B) {
	e := Entry{Key: "up/web/u1", Value: benchValue, Version: Version{Clock: 123456, Node: "node-1"}}
	b.ReportAllocs()
	for b.Loop() {
		EncodeEntry(e)
	}
}

func BenchmarkDecodeEntry(b *testing.B) {
	raw := EncodeEntry(Entry{Key: "up/web/u1", Value: benchValue, Version: Version{Clock: 123456, Node: "node-1"}})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeEntry(raw); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGet is the read of the request path: one key among 10,000.
func BenchmarkGet(b *testing.B) {
	c := filledCluster(b, 100, 100)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := c.Get("up/svc050/u050"); !ok {
			b.Fatal("missing")
		}
	}
}

// BenchmarkEntriesPrefix lists the 100 upstreams of one service among
// 10,000 entries.
func BenchmarkEntriesPrefix(b *testing.B) {
	c := filledCluster(b, 100, 100)
	b.ReportAllocs()
	for b.Loop() {
		if n := len(c.Entries("up/svc050/")); n != 100 {
			b.Fatalf("got %d entries", n)
		}
	}
}

// BenchmarkSet is a local write: version, copy, callback queue, gossip
// queue and hand-off to the direct sender (full here, so skipped).
func BenchmarkSet(b *testing.B) {
	c := filledCluster(b, 10, 100)
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprintf("up/svc%03d/u%03d", i/100, i%100)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c.Set(keys[i%len(keys)], benchValue)
		i++
	}
}

// BenchmarkNotifyMsg is the receive path of a delta: decode, merge,
// queue for gossip.
func BenchmarkNotifyMsg(b *testing.B) {
	c := offlineCluster(b)
	d := &delegate{c: c}
	// Every message is newer than the one before, or it would change
	// nothing; past the last one the state starts afresh.
	msgs := make([][]byte, 1<<16)
	for i := range msgs {
		msgs[i] = encodeEntryMsg(Entry{Key: fmt.Sprintf("up/svc%03d/u%03d", i%1000/100, i%100), Value: benchValue, Version: Version{Clock: uint64(i + 1), Node: "remote"}})
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == len(msgs) {
			b.StopTimer()
			c.mu.Lock()
			c.tab = newTable(c.cfg.TombstoneGrace)
			c.mu.Unlock()
			i = 0
			b.StartTimer()
		}
		d.NotifyMsg(msgs[i])
		i++
	}
}

// BenchmarkLocalState encodes 10,000 entries for a push/pull.
func BenchmarkLocalState(b *testing.B) {
	c := filledCluster(b, 100, 100)
	b.ReportAllocs()
	for b.Loop() {
		c.localState()
	}
}

// BenchmarkMergeRemoteState merges a push/pull of 10,000 entries already
// held: the steady state of anti-entropy.
func BenchmarkMergeRemoteState(b *testing.B) {
	c := filledCluster(b, 100, 100)
	d := &delegate{c: c}
	state := c.localState()
	b.SetBytes(int64(len(state)))
	b.ReportAllocs()
	for b.Loop() {
		d.MergeRemoteState(state, false)
	}
}

// BenchmarkClusterSet is a local write on a live node with two peers,
// including the direct UDP sends. A burst this long overflows the direct
// send queue and the gossip packets; push/pull settles the rest.
func BenchmarkClusterSet(b *testing.B) {
	cs := startN(b, 3, func(i int, cfg *Config) { cfg.PushPullInterval = 300 * time.Millisecond })
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		cs[0].Set(fmt.Sprintf("k%d", i%1000), benchValue)
		i++
	}
	b.StopTimer()
	waitSame(b, cs, 30*time.Second)
}
