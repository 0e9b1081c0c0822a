// Package node is the composition root of a vulcan node: it opens the store,
// joins the cluster, keeps the upstream table in step with the replicated
// state, and runs the admission pipeline that the HTTP and SMTP front ends
// share (authorize, route, rate-limit, pick an upstream).
package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"vulcan/gossip"
	"vulcan/node/auth"
	"vulcan/node/store"
	"vulcan/node/store/cassandra"
	"vulcan/ratelimit"
	"vulcan/upstreams"
)

// Version is the version reported by /v1/status.
const Version = "0.1.0"

// tombstoneGrace is how long a delete is remembered, in gossip and in the
// store: a node cut off for longer may bring a deleted entry back.
const tombstoneGrace = gossip.DefaultTombstoneGrace

// Node is one running vulcan node. Its methods are safe for concurrent use.
type Node struct {
	cfg     Config
	log     hclog.Logger
	store   store.Store
	cluster atomic.Pointer[gossip.Cluster]
	table   *upstreams.Table
	limiter *ratelimit.Limiter
	auth    *auth.Client // nil when the node runs open
	metrics *metrics

	// applyMu serialises applying replicated entries to the table, so that
	// an entry read from the cluster is never applied over a newer one.
	applyMu sync.Mutex

	persist    *persister
	limitsWake chan struct{}
	reports    *reports

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
}

// New opens the store, loads the state it holds, joins the cluster and
// starts the node's background work. Close stops it all.
func New(cfg Config, logger hclog.Logger) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{cfg: cfg, log: logger.Named("node"), ctx: ctx, cancel: cancel, limitsWake: make(chan struct{}, 1)}
	if err := n.open(logger); err != nil {
		cancel()
		n.closeParts()
		return nil, err
	}
	return n, nil
}

func (n *Node) open(logger hclog.Logger) error {
	st, err := openStore(n.ctx, n.cfg, logger)
	if err != nil {
		return err
	}
	n.store = st
	n.reports = newReports()
	n.table = upstreams.NewTable(upstreams.Config{
		Logger:   logger.Named("upstreams"),
		OnHealth: n.onLocalHealth,
	})
	n.limiter = ratelimit.New(ratelimit.Config{
		Store:      st,
		FailClosed: n.cfg.RateLimitFailClosed,
		Logger:     logger.Named("ratelimit"),
	})
	if len(n.cfg.AuthURLs) > 0 {
		a, err := auth.New(auth.Config{
			URLs:    n.cfg.AuthURLs,
			Timeout: durationOr(n.cfg.AuthTimeout, DefaultAuthTimeout),
			Logger:  logger.Named("auth"),
		})
		if err != nil {
			return fmt.Errorf("auth: %w", err)
		}
		n.auth = a
	}
	key, _ := n.cfg.gossipKey()
	n.persist = newPersister(st, tombstoneGrace, logger.Named("persist"))
	c, err := gossip.New(gossip.Config{
		NodeName:      n.cfg.Node,
		BindAddr:      n.cfg.Bind,
		AdvertiseAddr: n.cfg.Advertise,
		Join:          n.cfg.Join,
		SecretKey:     key,
		// The store keeps tombstones exactly as long as gossip does.
		TombstoneGrace: tombstoneGrace,
		Logger:         logger.Named("gossip"),
		OnChange:       n.onChange,
		OnMember:       n.onMember,
	})
	if err != nil {
		return fmt.Errorf("gossip: %w", err)
	}
	n.cluster.Store(c)
	if err := n.loadState(); err != nil {
		return err
	}
	if err := n.reloadLimits(n.ctx); err != nil {
		return err
	}
	n.metrics = newMetrics(n)

	n.start(func(ctx context.Context) { n.persist.run(ctx) })
	n.start(n.reportLoop)
	n.start(n.table.RunChecks)
	n.start(n.limiter.Run)
	n.start(n.limitLoop)
	n.log.Info("node started", "node", n.cfg.Node, "bind", n.cfg.Bind, "store", n.store.Kind(), "auth", n.auth != nil)
	return nil
}

func (n *Node) start(f func(ctx context.Context)) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f(n.ctx)
	}()
}

func openStore(ctx context.Context, cfg Config, logger hclog.Logger) (store.Store, error) {
	if len(cfg.Cassandra) > 0 {
		octx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		st, err := cassandra.Open(octx, cassandra.Config{
			Hosts:             cfg.Cassandra,
			Keyspace:          cfg.Keyspace,
			ReplicationFactor: cfg.ReplicationFactor,
			Logger:            logger.Named("cassandra"),
		})
		if err != nil {
			return nil, fmt.Errorf("open cassandra store: %w", err)
		}
		return st, nil
	}
	st, err := store.OpenEmbedded(cfg.Data, logger.Named("store"))
	if err != nil {
		return nil, fmt.Errorf("open embedded store: %w", err)
	}
	return st, nil
}

// loadState seeds the cluster with what the store holds and applies the
// merged state to the table.
func (n *Node) loadState() error {
	ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
	defer cancel()
	recs, err := n.store.LoadState(ctx)
	if err != nil {
		return fmt.Errorf("load replicated state: %w", err)
	}
	entries := make([]gossip.Entry, 0, len(recs))
	for _, r := range recs {
		e, err := gossip.DecodeEntry(r.Data)
		if err != nil {
			n.log.Warn("skipping unreadable state record", "key", r.Key, "error", err)
			continue
		}
		entries = append(entries, e)
	}
	c := n.cluster.Load()
	c.Load(entries)
	n.log.Info("replicated state loaded", "entries", len(entries))
	n.persist.removeExpired(ctx, recs)
	n.applyAll()
	return nil
}

// Shutdown leaves the cluster gracefully; the front ends have already
// stopped accepting and drained their requests.
func (n *Node) Shutdown(timeout time.Duration) {
	if c := n.cluster.Load(); c != nil {
		if err := c.Leave(timeout); err != nil {
			n.log.Warn("leave cluster", "error", err)
		}
	}
}

// Close stops the background work, the cluster and the store. It is safe to
// call more than once.
func (n *Node) Close() error {
	if !n.closed.CompareAndSwap(false, true) {
		return nil
	}
	n.cancel()
	n.wg.Wait()
	return n.closeParts()
}

func (n *Node) closeParts() error {
	var errs []error
	if c := n.cluster.Load(); c != nil {
		errs = append(errs, c.Shutdown())
	}
	if n.persist != nil {
		n.persist.flush(context.Background())
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	return errors.Join(errs...)
}

// Name is this node's name in the cluster.
func (n *Node) Name() string { return n.cfg.Node }

// Config returns the node's configuration.
func (n *Node) Config() Config { return n.cfg }

// Logger returns the root logger's sub-logger for a component.
func (n *Node) Logger(component string) hclog.Logger { return n.log.ResetNamed(component) }
