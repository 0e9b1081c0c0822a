package gossip

import (
	"bytes"

	"github.com/hashicorp/memberlist"
)

// regossipLimit caps how many entries learned from one push/pull are
// gossiped on. A handful means a peer made changes nobody else has seen
// (after a partition, say) and spreading them beats waiting for the next
// push/pulls; thousands mean this node is catching up on what everyone
// else already holds.
const regossipLimit = 32

// delegate is the memberlist.Delegate of a Cluster. memberlist calls it
// from its receive loops, concurrently: every method is safe for that and
// returns without waiting on the network.
type delegate struct {
	c *Cluster
}

// NodeMeta gossips the instance of this process with its alive messages.
func (d *delegate) NodeMeta(limit int) []byte {
	return encodeMeta(d.c.instance)
}

// NotifyMsg handles a message from a peer. buf is reused by memberlist
// after the call: everything kept is copied.
func (d *delegate) NotifyMsg(buf []byte) {
	if len(buf) == 0 {
		return
	}
	switch messageType(buf[0]) {
	case msgEntry:
		e, err := decodeEntryMsg(buf)
		if err != nil {
			d.c.log.Warn("dropping malformed entry message", "error", err)
			return
		}
		d.c.merge([]Entry{e}, 0, 1)
	case msgLeave:
		m, err := decodeLeaveMsg(buf)
		if err != nil {
			d.c.log.Warn("dropping malformed leave message", "error", err)
			return
		}
		d.c.leaveIntent(m, bytes.Clone(buf))
	default:
		d.c.log.Warn("dropping message of unknown type", "type", buf[0])
	}
}

// GetBroadcasts hands memberlist the queued deltas that fit its packet.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.c.queue.GetBroadcasts(overhead, limit)
}

// LocalState is the whole state for a push/pull.
func (d *delegate) LocalState(join bool) []byte {
	return d.c.localState()
}

// MergeRemoteState merges a peer's whole state from a push/pull.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	m, err := decodeStateMsg(buf)
	if err != nil {
		d.c.log.Warn("dropping malformed remote state", "error", err)
		return
	}
	d.c.merge(m.Entries, m.Clock, regossipLimit)
}

// events is the memberlist.EventDelegate of a Cluster. memberlist calls it
// with its node lock held, so it only records and queues.
type events struct {
	c *Cluster
}

// NotifyJoin records a member that joined or came back.
func (e *events) NotifyJoin(n *memberlist.Node) { e.c.memberAlive(n) }

// NotifyUpdate records a member whose metadata changed: a new instance.
func (e *events) NotifyUpdate(n *memberlist.Node) { e.c.memberAlive(n) }

// NotifyLeave records a member that failed or left.
func (e *events) NotifyLeave(n *memberlist.Node) { e.c.memberGone(n) }

var (
	_ memberlist.Delegate      = (*delegate)(nil)
	_ memberlist.EventDelegate = (*events)(nil)
)
