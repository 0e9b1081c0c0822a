package ratelimit

import (
	"math"
	"slices"
)

// bucket is one time slice of a counter; see the package doc for why a hit
// is in exactly one of the four numbers.
type bucket struct {
	sec     int64 // start, Unix seconds, aligned to the counter's width
	cluster int32 // every node's hits, as last read from the store
	pending int32 // local hits not yet sent to the store
	written int32 // local hits sent, not yet reflected in a read
	local   int32 // local hits that will never reach the store
}

func (b *bucket) hits() int64 {
	return int64(b.cluster) + int64(b.pending) + int64(b.written) + int64(b.local)
}

// noPending marks a counter without pending hits.
const noPending = math.MaxInt64

// never is the dropAt of a counter without live buckets.
const never = math.MaxInt64

// counter is the sliding window of one (token, limit id). It is guarded by
// the lock of the shard that owns it. The fields a decision reads and
// writes come first, to share one cache line.
type counter struct {
	total int64 // sum of hits over buckets[head:]
	// buckets[head:] are the non-empty buckets in time order; those before
	// head have left the window and are reused once the slice is full.
	buckets []bucket
	head    int
	// dropAt is the first second at which the oldest live bucket has left
	// the window, so that a decision passes over advance until then; it
	// may be lower than that (advance then only recomputes it), never
	// higher.
	dropAt int64
	period int64
	width  int64
	queued bool // in its shard's touched list, waiting for a sync
	dead   bool // dropped from the shard
	// pendingFrom is the oldest bucket holding pending hits, so that a sync
	// scans only the recent end of the window.
	pendingFrom int64
	// retryAt caches, for retryFor, the second at which enough hits leave
	// the window; denied hits do not change it, so a flood stays cheap.
	retryAt  int64
	retryFor int64
	key      string // CounterKey(token, limit id)
	sh       *shard
}

func newCounter(key string, sh *shard) *counter {
	return &counter{key: key, sh: sh, pendingFrom: noPending, dropAt: never}
}

// configure applies the limit's period; a new bucket width makes the old
// buckets meaningless, so they are dropped.
func (c *counter) configure(period, width int64) {
	if c.width != width {
		c.buckets, c.head, c.total = c.buckets[:0], 0, 0
		c.pendingFrom = noPending
	}
	c.period, c.width = period, width
	c.retryAt = 0
	c.dropAt = 0
}

// alignDown returns the start of the width-second bucket holding sec.
func alignDown(sec, width int64) int64 {
	if width <= 1 {
		return sec
	}
	m := sec % width
	if m < 0 {
		m += width
	}
	return sec - m
}

// windowStart is the start of the oldest bucket that overlaps the window of
// the last period seconds ending at sec.
func (c *counter) windowStart(sec int64) int64 {
	return alignDown(sec-c.period+1, c.width)
}

// advanceTo drops the buckets that have left the window ending at sec.
func (c *counter) advanceTo(sec int64) {
	if sec >= c.dropAt {
		c.advance(c.windowStart(sec))
	}
}

// advance drops the buckets that start before ws.
func (c *counter) advance(ws int64) {
	for c.head < len(c.buckets) && c.buckets[c.head].sec < ws {
		c.total -= c.buckets[c.head].hits()
		c.head++
	}
	if c.head == len(c.buckets) {
		c.buckets, c.head = c.buckets[:0], 0
		c.dropAt = never
		return
	}
	c.dropAt = c.expiry(c.buckets[c.head].sec)
}

// bucketAt returns the bucket holding sec, creating it.
func (c *counter) bucketAt(sec int64) *bucket {
	start := alignDown(sec, c.width)
	if n := len(c.buckets); n > c.head {
		last := &c.buckets[n-1]
		if last.sec == start {
			return last
		}
		if last.sec > start {
			return c.insert(start)
		}
	}
	if len(c.buckets) == cap(c.buckets) && c.head > 0 {
		n := copy(c.buckets, c.buckets[c.head:])
		c.buckets, c.head = c.buckets[:n], 0
	}
	c.buckets = append(c.buckets, bucket{sec: start})
	c.dropAt = min(c.dropAt, c.expiry(start))
	return &c.buckets[len(c.buckets)-1]
}

// insert finds or creates the bucket starting at start inside the window:
// rare, for a caller whose clock reading lost the race for the lock.
func (c *counter) insert(start int64) *bucket {
	i, found := c.find(start)
	if !found {
		c.buckets = slices.Insert(c.buckets, i, bucket{sec: start})
		c.dropAt = min(c.dropAt, c.expiry(start))
	}
	return &c.buckets[i]
}

// find returns the index of the live bucket starting at start, or where it
// would go.
func (c *counter) find(start int64) (int, bool) {
	i, found := slices.BinarySearchFunc(c.buckets[c.head:], start, func(b bucket, s int64) int {
		switch {
		case b.sec < s:
			return -1
		case b.sec > s:
			return 1
		}
		return 0
	})
	return c.head + i, found
}

// add counts one hit at sec: pending when it is to be synced, local when
// there is no store.
func (c *counter) add(sec int64, synced bool) {
	b := c.bucketAt(sec)
	if synced {
		b.pending++
		if b.sec < c.pendingFrom {
			c.pendingFrom = b.sec
		}
	} else {
		b.local++
	}
	c.total++
	if c.retryAt != 0 {
		c.retryAt = 0
	}
}

// retryAfter is the number of seconds from sec until fewer than threshold
// hits remain in the window, at least 1. With threshold 0 nothing would
// ever pass; the period is as good an answer as any.
func (c *counter) retryAfter(sec, threshold int64) int64 {
	if threshold <= 0 {
		return max(c.period, 1)
	}
	if c.retryAt == 0 || c.retryFor != threshold {
		// The window frees enough room once the bucket where the running
		// sum reaches total-threshold+1 has left it.
		excess := c.total - threshold + 1
		at := sec + c.period
		var sum int64
		for i := c.head; i < len(c.buckets); i++ {
			if sum += c.buckets[i].hits(); sum >= excess {
				at = c.expiry(c.buckets[i].sec)
				break
			}
		}
		c.retryAt, c.retryFor = at, threshold
	}
	return max(c.retryAt-sec, 1)
}

// reset is the number of seconds from sec until the oldest bucket leaves
// the window, at least 1; 0 when the window is empty.
func (c *counter) reset(sec int64) int64 {
	if c.head == len(c.buckets) {
		return 0
	}
	return max(c.expiry(c.buckets[c.head].sec)-sec, 1)
}

// expiry is the first second whose window no longer overlaps the bucket
// starting at start.
func (c *counter) expiry(start int64) int64 { return start + c.width + c.period - 1 }

// collect appends the pending hits to out as deltas, with c once per delta
// in owners, and moves them to written.
func (c *counter) collect(out []Delta, owners []*counter) ([]Delta, []*counter) {
	for i := len(c.buckets) - 1; i >= c.head; i-- {
		b := &c.buckets[i]
		if b.sec < c.pendingFrom {
			break
		}
		if b.pending > 0 {
			out = append(out, Delta{Key: c.key, Bucket: b.sec, Hits: int64(b.pending)})
			owners = append(owners, c)
			b.written += b.pending
			b.pending = 0
		}
	}
	c.pendingFrom = noPending
	return out, owners
}

// unwrite moves hits of a failed write from written to local: they stay
// counted here, and are never sent again.
func (c *counter) unwrite(start, hits int64) {
	i, found := c.find(start)
	if !found {
		return // left the window meanwhile
	}
	b := &c.buckets[i]
	n := int32(min(hits, int64(b.written)))
	b.written -= n
	b.local += n
}

// cell is one bucket as read from the store.
type cell struct {
	sec, hits int64
}

// merge replaces the cluster numbers from a read of every bucket at or
// after since, which began after every written hit had been stored. cells
// must be sorted by sec without duplicates.
func (c *counter) merge(since int64, cells []cell) {
	c.advance(since)
	for len(cells) > 0 && cells[0].sec < since {
		cells = cells[1:]
	}
	live := c.buckets[c.head:]
	missing := 0
	for i, j := 0, 0; j < len(cells); j++ {
		for i < len(live) && live[i].sec < cells[j].sec {
			i++
		}
		if i == len(live) || live[i].sec != cells[j].sec {
			missing++
		}
	}
	if missing > 0 {
		out := make([]bucket, 0, len(live)+missing)
		i, j := 0, 0
		for i < len(live) || j < len(cells) {
			switch {
			case j == len(cells) || (i < len(live) && live[i].sec < cells[j].sec):
				out = append(out, live[i])
				i++
			case i == len(live) || cells[j].sec < live[i].sec:
				out = append(out, bucket{sec: cells[j].sec})
				j++
			default:
				out = append(out, live[i])
				i, j = i+1, j+1
			}
		}
		c.buckets, c.head = out, 0
		live = out
		if len(out) > 0 {
			c.dropAt = min(c.dropAt, c.expiry(out[0].sec))
		}
	}
	c.total = 0
	j := 0
	for i := range live {
		b := &live[i]
		b.cluster, b.written = 0, 0
		for j < len(cells) && cells[j].sec < b.sec {
			j++
		}
		if j < len(cells) && cells[j].sec == b.sec {
			b.cluster = clamp32(cells[j].hits)
		}
		c.total += b.hits()
	}
	c.retryAt = 0
}

func clamp32(n int64) int32 {
	return int32(max(0, min(n, math.MaxInt32)))
}
