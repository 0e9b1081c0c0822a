package ratelimit

import (
	"testing"
	"time"
)

func TestDefaultClockFollowsTheWallClock(t *testing.T) {
	l := New(Config{})
	for range 3 {
		before := time.Now().Unix()
		got := l.unixNow()
		after := time.Now().Unix()
		if got < before || got > after {
			t.Fatalf("unixNow %d outside [%d, %d]", got, before, after)
		}
		l.reanchor()
	}
}

// TestTickingClockTurnsWithTheSecond: while the ticker runs the clock is
// never ahead of the wall clock, at most a second behind, and catches up
// with each new second; stopped, it reads the wall clock again.
func TestTickingClockTurnsWithTheSecond(t *testing.T) {
	w := newWallClock()
	stop := w.tick()
	if w.sec.Load() == 0 {
		t.Fatal("the ticker does not hold the second")
	}
	start := time.Now().Unix()
	deadline := time.Now().Add(5 * time.Second)
	for turned := 0; turned < 2; {
		before := time.Now().Unix()
		got := w.unix()
		if got > time.Now().Unix() || got < before-1 {
			t.Fatalf("ticking clock says %d at %d", got, before)
		}
		if got == start+int64(turned)+1 {
			turned++
		}
		if time.Now().After(deadline) {
			t.Fatalf("the clock did not turn twice in 5s: at %d, started at %d", got, start)
		}
		time.Sleep(time.Millisecond)
	}
	stop()
	if w.sec.Load() != 0 {
		t.Fatal("stopped ticker still holds the second")
	}
	before := time.Now().Unix()
	if got := w.unix(); got < before || got > time.Now().Unix() {
		t.Fatalf("stopped clock says %d at %d", got, before)
	}
}
