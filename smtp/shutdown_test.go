package smtp

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// Shutdown closes idle sessions at once, lets a message in progress
// finish, then returns.
func TestShutdownWaitsForMessagesInFlight(t *testing.T) {
	n, up, _ := setup(t, Config{})
	s, addr := startProxy(t, Config{}, n)

	idle := greeted(t, addr)
	busy := greeted(t, addr)
	busy.cmd(250, "2.0.0", "MAIL FROM:<alice@test>")
	busy.cmd(250, "2.0.0", "RCPT TO:<bob@test>")

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	idle.expect(421, "")
	if err := idle.closed(); err != nil {
		t.Fatalf("idle session not closed: %v", err)
	}
	eventually(t, 2*time.Second, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return errors.New("still accepting")
		}
		return nil
	})
	select {
	case err := <-done:
		t.Fatalf("shutdown returned with a message in flight: %v", err)
	case <-time.After(100 * time.Millisecond):
	}

	body, sum := message(1, 20_000)
	busy.cmd(354, "", "DATA")
	w := busy.tp.DotWriter()
	_, _ = w.Write(body)
	_ = w.Close()
	busy.expect(250, "2.0.0")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown did not return after the last message")
	}
	if got := up.messages(); len(got) != 1 || got[0].Sum != sum {
		t.Fatalf("upstream got %+v", got)
	}
}

// Past its deadline, Shutdown closes the sessions left; a message cut off
// is not delivered.
func TestShutdownDeadlineAbortsMessages(t *testing.T) {
	n, up, _ := setup(t, Config{})
	s, addr := startProxy(t, Config{}, n)
	c := greeted(t, addr)
	c.cmd(250, "2.0.0", "MAIL FROM:<alice@test>")
	c.cmd(250, "2.0.0", "RCPT TO:<bob@test>")
	c.cmd(354, "", "DATA")
	body, _ := message(1, 100_000)
	w := c.tp.DotWriter()
	_, _ = w.Write(body)
	_ = c.tp.W.Flush()

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("shutdown = %v, want the deadline", err)
	}
	if err := c.closed(); err != nil {
		t.Fatalf("session not closed: %v", err)
	}
	eventually(t, 2*time.Second, func() error {
		if up.aborted.Load() != 1 {
			return errors.New("upstream transaction not aborted")
		}
		if n.inFlight("u1") != 0 {
			return errors.New("pick still held")
		}
		return nil
	})
	if len(up.messages()) != 0 {
		t.Fatal("a message cut off by shutdown was delivered")
	}
}
