package gossip

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Config configures a Cluster. The zero value of every field but NodeName
// (which defaults to the host name) gets the default given beside it; the
// timing defaults are tuned for a LAN, where a change should reach every node
// well within a second.
type Config struct {
	// NodeName identifies this node; it must be unique in the cluster and
	// breaks ties between concurrent writes. Default: the host name.
	NodeName string
	// BindAddr is the IP:port memberlist listens on, UDP and TCP alike; port
	// 0 picks a free port (see Cluster.LocalAddr). Default: 127.0.0.1:7946.
	BindAddr string
	// AdvertiseAddr is the IP or IP:port other nodes reach this one at, when
	// it differs from BindAddr (NAT, a wildcard bind). Default: the bound
	// address; a missing port means the bound port.
	AdvertiseAddr string
	// Join lists the host:port of nodes to join. They are tried in the
	// background until one answers; meanwhile the node runs alone.
	Join []string
	// JoinRetryInterval is the pause between rounds of join attempts.
	// Default: 2s.
	JoinRetryInterval time.Duration
	// ReconnectInterval is how often one member held dead is tried again,
	// so that a healed partition merges by itself. Negative turns it off.
	// Default: 2s.
	ReconnectInterval time.Duration
	// SecretKey, 16, 24 or 32 bytes, turns on memberlist's AES-GCM encryption
	// of every packet and stream. A node with another key, or none, can then
	// neither join nor inject state. Default: no encryption.
	SecretKey []byte
	// Logger receives this package's logs and memberlist's, whose levels are
	// inferred from their "[LEVEL]" prefixes. Default: discard.
	Logger hclog.Logger
	// OnChange is called with every change applied to the state, local or
	// remote, tombstones included, but not for entries given to Load. Calls
	// are made one at a time in the order the changes were applied, from
	// whichever goroutine applied one, possibly memberlist's receive loop:
	// OnChange must not block long. It may read the Cluster and even write
	// to it; a change made meanwhile is delivered after the current call
	// returns, so a Set may return before its own OnChange has run.
	OnChange func(e Entry)
	// OnMember is called when a member joins, is updated, fails or leaves,
	// under the same rules as OnChange and in the same sequence.
	OnMember func(m Member)
	// TombstoneGrace is how long a delete is remembered. A node that was cut
	// off for longer may bring a deleted key back. Default: 24h.
	TombstoneGrace time.Duration
	// MemberReap is how long a dead or left member stays in Members.
	// Default: 24h.
	MemberReap time.Duration

	// GossipInterval is how often queued deltas are gossiped to GossipNodes
	// random members. Gossip is sent only when something is queued, so a
	// short interval costs nothing at rest. Default: 50ms (memberlist's LAN
	// preset: 200ms).
	GossipInterval time.Duration
	// GossipNodes is the fan-out of each gossip round. Default: 4.
	GossipNodes int
	// PushNodes is how many random alive members a local change is sent to
	// at once, by UDP, besides gossip. Gossip alone leaves a node out now
	// and then (each holder sends a delta only RetransmitMult*log10(N)
	// times), which push/pull repairs only seconds later; sending to every
	// member up front costs the origin one packet per member, no more than
	// gossip costs the cluster, and gossip then only covers lost packets.
	// Entries too big for a packet go over TCP to every alive member
	// instead. Negative disables direct sends. Default: 128.
	PushNodes int
	// RetransmitMult sets how many times each node gossips a delta:
	// RetransmitMult * ceil(log10(N+1)). Default: 4.
	RetransmitMult int
	// ProbeInterval is how often a random member is probed for failure
	// detection; ProbeTimeout is how long its ack may take (about the
	// network's p99 round trip). Defaults: 1s and 500ms.
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	// PushPullInterval is how often the whole state is exchanged with one
	// random member (anti-entropy: repairs lost deltas). memberlist
	// stretches it on clusters of more than 32 nodes. Default: 10s.
	PushPullInterval time.Duration
	// TCPTimeout bounds every stream: join, push/pull, direct sends of big
	// entries. Default: 5s.
	TCPTimeout time.Duration

	// Now is the clock of tombstones and reaping; tests move it. Default:
	// time.Now.
	Now func() time.Time
}

// Defaults of Config, explained beside its fields.
const (
	// DefaultBindAddr is the default Config.BindAddr.
	DefaultBindAddr = "127.0.0.1:7946"
	// DefaultJoinRetryInterval is the default Config.JoinRetryInterval.
	DefaultJoinRetryInterval = 2 * time.Second
	// DefaultReconnectInterval is the default Config.ReconnectInterval.
	DefaultReconnectInterval = 2 * time.Second
	// DefaultTombstoneGrace is the default Config.TombstoneGrace.
	DefaultTombstoneGrace = 24 * time.Hour
	// DefaultMemberReap is the default Config.MemberReap.
	DefaultMemberReap = 24 * time.Hour
	// DefaultGossipInterval is the default Config.GossipInterval.
	DefaultGossipInterval = 50 * time.Millisecond
	// DefaultGossipNodes is the default Config.GossipNodes.
	DefaultGossipNodes = 4
	// DefaultPushNodes is the default Config.PushNodes.
	DefaultPushNodes = 128
	// DefaultRetransmitMult is the default Config.RetransmitMult.
	DefaultRetransmitMult = 4
	// DefaultProbeInterval is the default Config.ProbeInterval.
	DefaultProbeInterval = time.Second
	// DefaultProbeTimeout is the default Config.ProbeTimeout.
	DefaultProbeTimeout = 500 * time.Millisecond
	// DefaultPushPullInterval is the default Config.PushPullInterval.
	DefaultPushPullInterval = 10 * time.Second
	// DefaultTCPTimeout is the default Config.TCPTimeout.
	DefaultTCPTimeout = 5 * time.Second
)

// withDefaults returns cfg with every unset field defaulted and checks it.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return cfg, fmt.Errorf("node name not set and no host name: %w", err)
		}
		cfg.NodeName = h
	}
	if cfg.BindAddr == "" {
		cfg.BindAddr = DefaultBindAddr
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	switch len(cfg.SecretKey) {
	case 0, 16, 24, 32:
	default:
		return cfg, fmt.Errorf("secret key is %d bytes, want 16, 24 or 32", len(cfg.SecretKey))
	}
	durations := []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&cfg.JoinRetryInterval, DefaultJoinRetryInterval},
		{&cfg.TombstoneGrace, DefaultTombstoneGrace},
		{&cfg.MemberReap, DefaultMemberReap},
		{&cfg.GossipInterval, DefaultGossipInterval},
		{&cfg.ProbeInterval, DefaultProbeInterval},
		{&cfg.ProbeTimeout, DefaultProbeTimeout},
		{&cfg.PushPullInterval, DefaultPushPullInterval},
		{&cfg.TCPTimeout, DefaultTCPTimeout},
	}
	if cfg.ReconnectInterval == 0 {
		cfg.ReconnectInterval = DefaultReconnectInterval
	}
	for _, d := range durations {
		if *d.v < 0 {
			return cfg, fmt.Errorf("negative duration %v", *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if cfg.GossipNodes <= 0 {
		cfg.GossipNodes = DefaultGossipNodes
	}
	if cfg.PushNodes == 0 {
		cfg.PushNodes = DefaultPushNodes
	}
	if cfg.RetransmitMult <= 0 {
		cfg.RetransmitMult = DefaultRetransmitMult
	}
	return cfg, nil
}

// splitIPPort parses "IP:port" (or a bare IP when defPort >= 0) as memberlist
// wants it: an IP literal and a port number.
func splitIPPort(addr string, defPort int) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		if defPort < 0 || net.ParseIP(addr) == nil {
			return "", 0, fmt.Errorf("address %q: %w", addr, err)
		}
		return addr, defPort, nil
	}
	if net.ParseIP(host) == nil {
		return "", 0, fmt.Errorf("address %q: host must be an IP address", addr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("address %q: bad port", addr)
	}
	return host, port, nil
}
