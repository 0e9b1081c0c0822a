package ratelimit

import "testing"

func TestCounterMerge(t *testing.T) {
	c := newCounter("k", nil)
	c.configure(10, 1)
	for _, sec := range []int64{100, 105, 105, 107} {
		c.add(sec, true)
	}
	var d []Delta
	d, _ = c.collect(d, nil) // 100:1, 105:2, 107:1 now written
	if len(d) != 3 || c.total != 4 {
		t.Fatalf("collected %v, total %d; want 3 deltas, total 4", d, c.total)
	}
	c.add(107, true) // pending, not in the read below

	// The store has our written hits plus other nodes' at 104 and 106, and
	// a bucket at 99 from before the window asked for.
	c.merge(101, []cell{{104, 3}, {105, 2}, {106, 4}, {107, 1}})
	want := []bucket{
		{sec: 104, cluster: 3},
		{sec: 105, cluster: 2},
		{sec: 106, cluster: 4},
		{sec: 107, cluster: 1, pending: 1},
	}
	got := c.buckets[c.head:]
	if len(got) != len(want) {
		t.Fatalf("buckets %+v; want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("bucket %d = %+v; want %+v", i, got[i], want[i])
		}
	}
	if c.total != 11 {
		t.Fatalf("total %d; want 11", c.total)
	}
	// Threshold 11 at 110: the hits at 104 (3) must leave; they do at 114.
	if ra := c.retryAfter(110, 11); ra != 4 {
		t.Fatalf("retryAfter = %d; want 4", ra)
	}
}

func TestCounterUnwriteKeepsHitsCounted(t *testing.T) {
	c := newCounter("k", nil)
	c.configure(10, 1)
	c.add(100, true)
	c.add(100, true)
	d, _ := c.collect(nil, nil)
	c.unwrite(d[0].Bucket, d[0].Hits)
	if b := c.buckets[c.head]; b.written != 0 || b.local != 2 || c.total != 2 {
		t.Fatalf("after a failed write: %+v, total %d; want 2 local, total 2", b, c.total)
	}
	// A later read does not include them; they still count here.
	c.merge(91, []cell{{100, 5}})
	if c.total != 7 {
		t.Fatalf("total %d after a read of 5 others; want 7", c.total)
	}
	if d, _ := c.collect(nil, nil); len(d) != 0 {
		t.Fatalf("local hits sent again: %v", d)
	}
}

func TestCounterReusesItsBuckets(t *testing.T) {
	c := newCounter("k", nil)
	c.configure(5, 1)
	for sec := int64(0); sec < 1000; sec++ {
		c.advance(c.windowStart(sec))
		c.add(sec, false)
	}
	if cap(c.buckets) > 16 || c.total != 5 {
		t.Fatalf("cap %d, total %d after sliding 1000 s over a 5 s window; want small, 5",
			cap(c.buckets), c.total)
	}
}
