package node

import (
	"context"
	"math/rand/v2"
	"time"

	"vulcan/gossip"
)

// rejoinInterval is how often a node tries to reach one member it holds
// dead. memberlist stops talking to a dead member for good once its dead
// broadcasts are spent (within about 30 s), so without these attempts the
// two sides of a healed partition would stay apart, each holding the other
// dead, and never exchange the changes made meanwhile. A successful join is
// a full push/pull, which also brings the states together at once.
const rejoinInterval = 2 * time.Second

// rejoinLoop tries, every rejoinInterval, to join one dead member picked at
// random, until ctx ends. Members that left are not tried: they said so.
func (n *Node) rejoinLoop(ctx context.Context) {
	t := time.NewTicker(rejoinInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n.rejoinOne()
	}
}

// rejoinOne makes one attempt; a join blocks for at most gossip's TCP
// timeout.
func (n *Node) rejoinOne() {
	c := n.cluster.Load()
	var dead []gossip.Member
	for _, m := range c.Members() {
		if m.Status == gossip.StatusDead && m.Name != n.cfg.Node && m.Addr != "" {
			dead = append(dead, m)
		}
	}
	if len(dead) == 0 {
		return
	}
	m := dead[rand.IntN(len(dead))]
	if _, err := c.Join([]string{m.Addr}); err != nil {
		n.log.Debug("dead member still unreachable", "member", m.Name, "addr", m.Addr, "error", err)
		return
	}
	n.log.Info("reached a member held dead", "member", m.Name, "addr", m.Addr)
}
