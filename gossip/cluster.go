package gossip

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"golang.org/x/sync/errgroup"
)

// delegateVersion is the version of this package's messages, checked by
// memberlist on every push/pull so that incompatible nodes refuse each other.
const delegateVersion = 1

// pushQueue bounds the changes waiting for a direct send. When it is full a
// change is left to gossip, which delivers it a little later.
const pushQueue = 256

// maxReliableSends bounds the TCP sends of one big entry in flight at once.
const maxReliableSends = 8

// joinWarnEvery spaces the warnings of a join that keeps failing: the first
// attempt warns, then every so many.
const joinWarnEvery = 30

// maxQueued bounds the deltas waiting for gossip (one per key at most).
// Beyond it the most gossiped ones are dropped: they have reached most
// nodes already, and push/pull repairs the rest.
const maxQueued = 4096

// Cluster is a member of a memberlist cluster holding a copy of the
// replicated state. All its methods are safe for concurrent use.
type Cluster struct {
	cfg      Config
	log      hclog.Logger
	instance uint64 // tells this process from an earlier one of the same name
	addr     string
	ml       *memberlist.Memberlist
	queue    *memberlist.TransmitLimitedQueue
	members  *memberView
	notify   *notifier

	// mu guards tab. Deltas are queued for gossip under it too, so that an
	// older delta never replaces a newer one of the same key in the queue.
	mu  sync.RWMutex
	tab *table

	pushCh chan []byte   // local changes for pushLoop
	kickCh chan struct{} // member events waiting for deliverLoop

	stop     context.CancelFunc
	stopJoin context.CancelFunc
	wg       sync.WaitGroup

	life sync.Mutex // serializes Leave and Shutdown
	left bool
	shut bool
}

// New starts memberlist on cfg.BindAddr and, when cfg.Join is set, joins the
// cluster in the background. Call Load next, before any write, when a
// durable copy of the state exists.
func New(cfg Config) (*Cluster, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("gossip config: %w", err)
	}
	bindIP, bindPort, err := splitIPPort(cfg.BindAddr, -1)
	if err != nil {
		return nil, fmt.Errorf("gossip bind address: %w", err)
	}
	c := &Cluster{
		cfg:      cfg,
		log:      cfg.Logger,
		instance: rand.Uint64(),
		members:  newMemberView(),
		notify:   &notifier{onChange: cfg.OnChange, onMember: cfg.OnMember},
		tab:      newTable(cfg.TombstoneGrace),
		pushCh:   make(chan []byte, pushQueue),
		kickCh:   make(chan struct{}, 1),
	}
	c.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       c.members.numAlive,
		RetransmitMult: cfg.RetransmitMult,
	}

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeName
	mc.BindAddr, mc.BindPort = bindIP, bindPort
	mc.AdvertisePort = bindPort
	if cfg.AdvertiseAddr != "" {
		mc.AdvertiseAddr, mc.AdvertisePort, err = splitIPPort(cfg.AdvertiseAddr, bindPort)
		if err != nil {
			return nil, fmt.Errorf("gossip advertise address: %w", err)
		}
	}
	mc.GossipInterval = cfg.GossipInterval
	mc.GossipNodes = cfg.GossipNodes
	mc.RetransmitMult = cfg.RetransmitMult
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.PushPullInterval = cfg.PushPullInterval
	mc.TCPTimeout = cfg.TCPTimeout
	// Compression is decided after messages are packed into a packet, so it
	// fits no more deltas in one; on a LAN it only costs CPU on every send.
	mc.EnableCompression = false
	if len(cfg.SecretKey) > 0 {
		mc.SecretKey = append([]byte(nil), cfg.SecretKey...)
	}
	mc.Delegate = &delegate{c: c}
	mc.Events = &events{c: c}
	mc.DelegateProtocolVersion = delegateVersion
	mc.DelegateProtocolMin = delegateVersion
	mc.DelegateProtocolMax = delegateVersion
	mc.Logger = cfg.Logger.Named("memberlist").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})

	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("start memberlist on %s: %w", cfg.BindAddr, err)
	}
	c.ml = ml
	c.addr = ml.LocalNode().Address()

	ctx, stop := context.WithCancel(context.Background())
	joinCtx, stopJoin := context.WithCancel(ctx)
	c.stop, c.stopJoin = stop, stopJoin
	c.goroutine(ctx, c.deliverLoop)
	c.goroutine(ctx, c.gcLoop)
	if cfg.PushNodes > 0 {
		c.goroutine(ctx, c.pushLoop)
	}
	if len(cfg.Join) > 0 {
		c.goroutine(joinCtx, c.joinLoop)
	}
	if cfg.ReconnectInterval > 0 {
		c.goroutine(joinCtx, c.reconnectLoop)
	}
	c.log.Info("gossip started", "node", cfg.NodeName, "addr", c.addr, "encrypted", len(cfg.SecretKey) > 0)
	return c, nil
}

func (c *Cluster) goroutine(ctx context.Context, f func(context.Context)) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f(ctx)
	}()
}

// LocalName returns the name of this node.
func (c *Cluster) LocalName() string { return c.cfg.NodeName }

// LocalAddr returns the host:port other nodes reach this one at, with the
// port actually bound when BindAddr asked for port 0.
func (c *Cluster) LocalAddr() string { return c.addr }

// Load seeds the state, typically from the durable store at start. Entries
// are merged like remote ones and lift the Lamport clock, so that the next
// local write is newer than any of them; no OnChange is called and nothing
// is gossiped (push/pull shares them).
func (c *Cluster) Load(entries []Entry) {
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range entries {
		c.tab.apply(e, now)
	}
}

// Set writes value under key with a version newer than any seen here,
// applies it, reports it to OnChange and spreads it to the cluster. The
// Cluster keeps its own copy of value; the Value of the returned entry, as of
// every entry this package returns, must not be modified.
func (c *Cluster) Set(key string, value []byte) Entry {
	c.mu.Lock()
	e := c.tab.set(key, value, c.cfg.NodeName, c.cfg.Now())
	c.publishLocked(e)
	c.mu.Unlock()
	c.notify.drain()
	return e
}

// Delete writes a tombstone for key, known here or not, and spreads it like
// Set. The tombstone is collected after the tombstone grace.
func (c *Cluster) Delete(key string) Entry {
	c.mu.Lock()
	e := c.tab.del(key, c.cfg.NodeName, c.cfg.Now())
	c.publishLocked(e)
	c.mu.Unlock()
	c.notify.drain()
	return e
}

// publishLocked reports and spreads a local change; c.mu is held.
func (c *Cluster) publishLocked(e Entry) {
	c.notify.change(e)
	msg := encodeEntryMsg(e)
	c.gossipLocked(e.Key, msg)
	if c.cfg.PushNodes > 0 {
		select {
		case c.pushCh <- msg:
		default:
			c.log.Debug("direct send queue full, leaving change to gossip", "key", e.Key)
		}
	}
}

// gossipLocked queues a delta for gossip when it fits a packet; c.mu is
// held.
func (c *Cluster) gossipLocked(key string, msg []byte) {
	if len(msg) > maxPacketMsg {
		return
	}
	c.queue.QueueBroadcast(entryBroadcast(key, msg))
	if c.queue.NumQueued() > maxQueued {
		c.queue.Prune(maxQueued)
	}
}

// Get returns the live entry for key.
func (c *Cluster) Get(key string) (Entry, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.tab.get(key)
}

// Entries returns the live entries whose key starts with prefix, sorted by
// key.
func (c *Cluster) Entries(prefix string) []Entry {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.tab.live(prefix)
}

// Snapshot returns every entry, tombstones included, sorted by key: what a
// durable copy of the state must hold.
func (c *Cluster) Snapshot() []Entry {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.tab.all()
}

// Members returns the members known to this node, itself included, sorted
// by name.
func (c *Cluster) Members() []Member { return c.members.list() }

// NumAlive returns the number of alive members, this node included.
func (c *Cluster) NumAlive() int { return c.members.numAlive() }

// Join contacts the given host:port addresses and merges state with each
// that answers; it returns how many did. It blocks for up to the TCP timeout
// per address.
func (c *Cluster) Join(addrs []string) (int, error) {
	n, err := c.ml.Join(addrs)
	if err != nil {
		return n, fmt.Errorf("join %v: %w", addrs, err)
	}
	return n, nil
}

// Leave tells the cluster this node is going away, so that the others report
// it "left" instead of "dead", and waits up to timeout for the news to go
// out. The node keeps answering until Shutdown. Calling Leave again does
// nothing.
func (c *Cluster) Leave(timeout time.Duration) error {
	c.life.Lock()
	defer c.life.Unlock()
	if c.shut {
		return errors.New("leave cluster: already shut down")
	}
	if c.left {
		return nil
	}
	c.left = true
	c.stopJoin()

	// The intent goes straight to every member and into the gossip queue
	// ahead of memberlist's own leave message, which cannot say whether the
	// node left or died.
	msg := encodeLeaveMsg(leaveMsg{Node: c.cfg.NodeName, Instance: c.instance})
	c.queue.QueueBroadcast(leaveBroadcast(c.cfg.NodeName, msg))
	for _, n := range c.peers() {
		if err := c.ml.SendBestEffort(n, msg); err != nil {
			c.log.Debug("send leave intent", "to", n.Name, "error", err)
		}
	}
	// Marked before memberlist reports this node gone, so that it is never
	// reported dead.
	if m, ok := c.members.left(c.cfg.NodeName, c.cfg.Now()); ok {
		c.notify.member(m)
		c.notify.drain()
	}
	if err := c.ml.Leave(timeout); err != nil {
		return fmt.Errorf("leave cluster: %w", err)
	}
	c.log.Info("left cluster", "node", c.cfg.NodeName)
	return nil
}

// Shutdown stops memberlist and every goroutine of the Cluster; without a
// Leave first, the others will find this node dead. It is idempotent.
func (c *Cluster) Shutdown() error {
	c.life.Lock()
	if c.shut {
		c.life.Unlock()
		return nil
	}
	c.shut = true
	c.life.Unlock()

	c.stop()
	err := c.ml.Shutdown()
	c.wg.Wait()
	if err != nil {
		return fmt.Errorf("shut down memberlist: %w", err)
	}
	return nil
}

// merge applies entries from a peer, with its clock, reports the changes and
// gossips them on when there are at most regossip of them.
func (c *Cluster) merge(entries []Entry, clock uint64, regossip int) {
	now := c.cfg.Now()
	c.mu.Lock()
	c.tab.witness(clock)
	var changed []Entry
	for _, e := range entries {
		if e, ok := c.tab.apply(e, now); ok {
			c.notify.change(e)
			changed = append(changed, e)
		}
	}
	if len(changed) <= regossip {
		for _, e := range changed {
			c.gossipLocked(e.Key, encodeEntryMsg(e))
		}
	}
	c.mu.Unlock()
	c.notify.drain()
}

// localState encodes the whole state for a push/pull.
func (c *Cluster) localState() []byte {
	c.mu.RLock()
	m := stateMsg{Clock: c.tab.clock, Entries: c.tab.all()}
	c.mu.RUnlock()
	// Entries are values whose bytes are never written again: encoding
	// them needs no lock.
	return encodeStateMsg(m)
}

// leaveIntent records a member's announced leave and passes the news on.
func (c *Cluster) leaveIntent(m leaveMsg, raw []byte) {
	mem, fresh, changed := c.members.leaveIntent(m, c.cfg.Now())
	if fresh {
		c.queue.QueueBroadcast(leaveBroadcast(m.Node, raw))
	}
	if changed {
		c.notify.member(mem)
		c.notify.drain()
	}
}

// memberAlive records a joined or updated member. It runs under
// memberlist's node lock, so delivery is left to deliverLoop.
func (c *Cluster) memberAlive(n *memberlist.Node) {
	instance, err := decodeMeta(n.Meta)
	if err != nil {
		c.log.Debug("member without instance metadata", "member", n.Name, "error", err)
	}
	if m, changed := c.members.alive(n.Name, n.Address(), instance, c.cfg.Now()); changed {
		c.notify.member(m)
		c.kick()
	}
}

// memberGone records a failed or departed member; see memberAlive.
func (c *Cluster) memberGone(n *memberlist.Node) {
	if m, changed := c.members.gone(n.Name, n.Address(), c.cfg.Now()); changed {
		c.notify.member(m)
		c.kick()
	}
}

func (c *Cluster) kick() {
	select {
	case c.kickCh <- struct{}{}:
	default:
	}
}

// deliverLoop delivers the member events queued under memberlist's lock.
func (c *Cluster) deliverLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kickCh:
			c.notify.drain()
		}
	}
}

// gcLoop collects expired tombstones and long-gone members.
func (c *Cluster) gcLoop(ctx context.Context) {
	interval := min(time.Minute, c.cfg.TombstoneGrace/2, c.cfg.MemberReap/2)
	interval = max(interval, 10*time.Millisecond)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.collect()
		}
	}
}

// collect is one round of gcLoop.
func (c *Cluster) collect() {
	now := c.cfg.Now()
	c.mu.Lock()
	tombstones := c.tab.collect(now)
	c.mu.Unlock()
	members := c.members.reap(now, c.cfg.MemberReap)
	if tombstones > 0 || members > 0 {
		c.log.Debug("collected garbage", "tombstones", tombstones, "members", members)
	}
}

// pushLoop sends local changes straight to members, so that they need not
// wait for a gossip round.
func (c *Cluster) pushLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-c.pushCh:
			c.push(msg)
		}
	}
}

// push sends msg by UDP to PushNodes random members or, when it is too big
// for a packet, by TCP to all of them.
func (c *Cluster) push(msg []byte) {
	peers := c.peers()
	if len(msg) <= maxPacketMsg {
		if len(peers) > c.cfg.PushNodes {
			peers = peers[:c.cfg.PushNodes]
		}
		for _, n := range peers {
			if err := c.ml.SendBestEffort(n, msg); err != nil {
				c.log.Debug("direct send", "to", n.Name, "error", err)
			}
		}
		return
	}
	var g errgroup.Group
	g.SetLimit(maxReliableSends)
	for _, n := range peers {
		g.Go(func() error {
			if err := c.ml.SendReliable(n, msg); err != nil {
				c.log.Warn("send big entry", "to", n.Name, "bytes", len(msg), "error", err)
			}
			return nil
		})
	}
	_ = g.Wait()
}

// peers returns the other alive members in random order.
func (c *Cluster) peers() []*memberlist.Node {
	nodes := c.ml.Members()
	out := nodes[:0]
	for _, n := range nodes {
		if n.Name != c.cfg.NodeName {
			out = append(out, n)
		}
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// joinLoop joins cfg.Join, retrying until a member other than this node
// answers.
func (c *Cluster) joinLoop(ctx context.Context) {
	for attempt := 0; ; attempt++ {
		n, err := c.ml.Join(c.cfg.Join)
		switch {
		case err != nil && attempt%joinWarnEvery == 0:
			c.log.Warn("join failed, will retry", "addrs", c.cfg.Join, "attempt", attempt+1, "retry", c.cfg.JoinRetryInterval, "error", err)
		case err != nil:
			c.log.Debug("join failed, will retry", "addrs", c.cfg.Join, "attempt", attempt+1, "error", err)
		case c.members.numAlive() > 1:
			c.log.Info("joined cluster", "contacted", n, "alive", c.members.numAlive())
			return
		default:
			// Only this node answered: it is the first one up.
			c.log.Debug("join found no other member, will retry", "addrs", c.cfg.Join)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(c.cfg.JoinRetryInterval):
		}
	}
}
