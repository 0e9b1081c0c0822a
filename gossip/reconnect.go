package gossip

import (
	"context"
	"math/rand/v2"
	"time"
)

// reconnectLoop tries, every ReconnectInterval, to join one member held
// dead, picked at random, until ctx ends (at Leave or Shutdown). memberlist
// stops talking to a dead member for good once its dead broadcasts are spent
// (within about 30 s), so without these attempts the two sides of a healed
// partition would stay apart, each holding the other dead. A successful join
// is a full push/pull, which also brings the states together at once.
// Members that left are not tried: they said so.
func (c *Cluster) reconnectLoop(ctx context.Context) {
	t := time.NewTicker(c.cfg.ReconnectInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.reconnectOne()
	}
}

// reconnectOne makes one attempt; a join blocks for at most TCPTimeout.
func (c *Cluster) reconnectOne() {
	var dead []Member
	for _, m := range c.Members() {
		if m.Status == StatusDead && m.Name != c.cfg.NodeName && m.Addr != "" {
			dead = append(dead, m)
		}
	}
	if len(dead) == 0 {
		return
	}
	m := dead[rand.IntN(len(dead))]
	if _, err := c.Join([]string{m.Addr}); err != nil {
		c.log.Debug("dead member still unreachable", "member", m.Name, "addr", m.Addr, "error", err)
		return
	}
	c.log.Info("reached a member held dead", "member", m.Name, "addr", m.Addr)
}
