package ratelimit

import (
	"sync/atomic"
	"time"
)

// wallClock tells the Unix second from the monotonic clock: one clock read
// per decision instead of time.Now's two. Reanchor realigns it with the
// wall clock, so that a step of the wall clock is followed at the next
// sync or sweep.
type wallClock struct {
	anchor atomic.Pointer[clockAnchor]
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
	a := w.anchor.Load()
	return (a.unixNano + int64(time.Since(a.mono))) / int64(time.Second)
}
