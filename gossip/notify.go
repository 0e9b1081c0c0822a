package gossip

import "sync"

// event is one callback to make: a change or a member update.
type event struct {
	entry    Entry
	member   Member
	isMember bool
}

// notifier delivers OnChange and OnMember calls one at a time, in the order
// they were queued, without holding any lock of the Cluster during a call.
// Whoever finds nobody delivering becomes the deliverer and drains the queue,
// events queued meanwhile by others included. So a callback may call back
// into the Cluster, even write to it, without deadlock, and memberlist's
// goroutines never wait for another goroutine's callback.
type notifier struct {
	onChange func(Entry)
	onMember func(Member)

	mu         sync.Mutex
	queue      []event
	delivering bool
}

// change queues e for OnChange. Callers queue while they still hold the
// lock under which they applied e, which fixes the order of delivery.
func (n *notifier) change(e Entry) {
	if n.onChange == nil {
		return
	}
	n.mu.Lock()
	n.queue = append(n.queue, event{entry: e})
	n.mu.Unlock()
}

// member queues m for OnMember.
func (n *notifier) member(m Member) {
	if n.onMember == nil {
		return
	}
	n.mu.Lock()
	n.queue = append(n.queue, event{member: m, isMember: true})
	n.mu.Unlock()
}

// drain delivers the queued events unless another goroutine already is; it
// is called after every queueing, with no Cluster lock held.
func (n *notifier) drain() {
	n.mu.Lock()
	if n.delivering || len(n.queue) == 0 {
		n.mu.Unlock()
		return
	}
	n.delivering = true
	for len(n.queue) > 0 {
		batch := n.queue
		n.queue = nil
		n.mu.Unlock()
		n.deliver(batch)
		n.mu.Lock()
	}
	// Cleared under the same lock that saw the queue empty, so an event
	// queued after this point finds nobody delivering and drains itself.
	n.delivering = false
	n.mu.Unlock()
}

func (n *notifier) deliver(batch []event) {
	completed := false
	defer func() {
		if !completed {
			// A callback panicked: let the next drain deliver the rest.
			n.mu.Lock()
			n.delivering = false
			n.mu.Unlock()
		}
	}()
	for _, ev := range batch {
		if ev.isMember {
			n.onMember(ev.member)
		} else {
			n.onChange(ev.entry)
		}
	}
	completed = true
}
