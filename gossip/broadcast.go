package gossip

import "github.com/hashicorp/memberlist"

// maxPacketMsg is the largest message gossiped or pushed by UDP. memberlist
// packs messages into 1400-byte packets (UDPBufferSize) and spends up to
// about 55 of them on its own framing, a checksum and encryption; bigger
// messages would never leave the TransmitLimitedQueue, so they go over TCP
// instead.
const maxPacketMsg = 1300

// broadcast is a queued message. It is named, so that queueing a newer
// message about the same subject drops the older one still queued: a key
// changed five times in a row is gossiped once, at its last version.
type broadcast struct {
	name string
	msg  []byte
}

// entryBroadcast queues a delta under the name of its key.
func entryBroadcast(key string, msg []byte) *broadcast {
	// The prefixes keep keys and node names in separate name spaces.
	return &broadcast{name: "k" + key, msg: msg}
}

// leaveBroadcast queues a leave intent under the name of its node.
func leaveBroadcast(node string, msg []byte) *broadcast {
	return &broadcast{name: "l" + node, msg: msg}
}

// Invalidates reports whether b replaces other in the queue.
func (b *broadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(memberlist.NamedBroadcast)
	return ok && o.Name() == b.name
}

// Name is the subject of the message, for memberlist.NamedBroadcast.
func (b *broadcast) Name() string { return b.name }

// Message returns the bytes to gossip.
func (b *broadcast) Message() []byte { return b.msg }

// Finished is called once the message is sent enough times or replaced;
// nothing waits on it.
func (b *broadcast) Finished() {}

var _ memberlist.NamedBroadcast = (*broadcast)(nil)
