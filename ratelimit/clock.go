package ratelimit

import (
	"sync"
	"sync/atomic"
	"time"
)

// wallClock tells the Unix second. While Run runs, a timer set for the
// start of every second keeps the current second in sec, so that a
// decision reads one atomic word instead of the clock (a clock read was a
// seventh of a decision's time on a virtual machine). Otherwise the
// second is computed from the monotonic clock: one clock read instead of
// time.Now's two. Reanchor realigns the monotonic reading with the wall
// clock, so that a step of the wall clock is followed at the next sync or
// sweep.
type wallClock struct {
	anchor atomic.Pointer[clockAnchor]
	// sec is the current Unix second while the ticker runs, else 0.
	sec atomic.Int64
}

type clockAnchor struct {
	mono     time.Time // carries a monotonic reading
	unixNano int64
}

func newWallClock() *wallClock {
	w := &wallClock{}
	w.reanchor()
	return w
}

func (w *wallClock) reanchor() {
	t := time.Now()
	w.anchor.Store(&clockAnchor{mono: t, unixNano: t.UnixNano()})
}

func (w *wallClock) unix() int64 {
	if s := w.sec.Load(); s != 0 {
		return s
	}
	a := w.anchor.Load()
	return (a.unixNano + int64(time.Since(a.mono))) / int64(time.Second)
}

// tick keeps sec current until stop is called; then unix reads the clock
// again. The second turns when the timer fires, which the scheduler may
// delay by a little: a hit in the first moments of a second can be counted
// in the second before, so it leaves its window that much earlier.
func (w *wallClock) tick() (stop func()) {
	var (
		mu      sync.Mutex
		stopped bool
		t       *time.Timer
	)
	set := func() time.Duration {
		now := time.Now()
		w.sec.Store(now.Unix())
		return time.Second - time.Duration(now.Nanosecond())
	}
	mu.Lock()
	defer mu.Unlock()
	t = time.AfterFunc(set(), func() {
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			t.Reset(set())
		}
	})
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
		w.sec.Store(0)
	}
}
