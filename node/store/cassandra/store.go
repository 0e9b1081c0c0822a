// Package cassandra is the store of a node in a cluster: limits, hit
// counters and the replicated state in Apache Cassandra, through gocql.
// It is the only package that imports gocql.
//
// Open creates the keyspace and the tables when missing (see schema.go);
// the driver then keeps its connections by itself, redialling nodes that
// went down, so a Store outlives an outage of Cassandra without being
// reopened: calls fail while it lasts and succeed again after.
//
// Retries: reads and the idempotent writes (limits, state, key
// registrations, deletes) are retried by the driver up to twice within
// their context's deadline. Counter updates are not idempotent: a retry
// after a timeout may count the same hits twice, so AddHits never retries
// (no retry policy on its batches). A failed AddHits may have applied some
// of its deltas; the limiter does not resend them, which under-counts
// rather than over-counts (see ratelimit.CounterStore).
package cassandra

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gocql/gocql"
	"github.com/hashicorp/go-hclog"

	"vulcan/node/store"
)

// Store keeps a node's durable data in Cassandra. It is safe for
// concurrent use.
type Store struct {
	sess *gocql.Session
	log  hclog.Logger
	// retry is the policy of idempotent statements only.
	retry gocql.RetryPolicy
	// now is the clock of the hit-key slots; tests replace it.
	now func() time.Time

	// mu guards registered: the hit_keys rows this Store wrote, by slot,
	// so that a key is registered once per slot rather than per AddHits.
	mu         sync.Mutex
	registered map[int32]map[string]struct{}
}

// Open connects to the cluster, creates the keyspace and the tables when
// they are missing, and returns a Store on that keyspace. Several Opens on
// the same keyspace, from one process or many, share the data.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("open cassandra store: %w", err)
	}
	if err := createSchema(ctx, cfg); err != nil {
		return nil, fmt.Errorf("open cassandra store %s: %w", cfg.Keyspace, err)
	}
	cluster := newCluster(cfg, cfg.Timeout)
	cluster.Keyspace = cfg.Keyspace
	sess, err := connect(ctx, cluster)
	if err != nil {
		return nil, fmt.Errorf("open cassandra store %s: %w", cfg.Keyspace, err)
	}
	cfg.Logger.Info("cassandra store open", "hosts", strings.Join(cfg.Hosts, ","), "keyspace", cfg.Keyspace)
	return &Store{
		sess:       sess,
		log:        cfg.Logger,
		retry:      &gocql.SimpleRetryPolicy{NumRetries: 2},
		now:        time.Now,
		registered: map[int32]map[string]struct{}{},
	}, nil
}

// createSchema runs migrate on a short-lived session without a keyspace
// (it may not exist yet) and with the longer timeout of schema changes.
func createSchema(ctx context.Context, cfg Config) error {
	sess, err := connect(ctx, newCluster(cfg, cfg.SchemaTimeout))
	if err != nil {
		return err
	}
	defer sess.Close()
	return migrate(ctx, sess, cfg)
}

func newCluster(cfg Config, timeout time.Duration) *gocql.ClusterConfig {
	cluster := gocql.NewCluster(cfg.Hosts...)
	// Protocol v5's framing is incomplete in gocql 1.7.
	cluster.ProtoVersion = 4
	cluster.Timeout = timeout
	cluster.ConnectTimeout = cfg.ConnectTimeout
	cluster.ReconnectInterval = cfg.ReconnectInterval
	cluster.Consistency = gocql.Quorum
	// No retries by default: statements that may be retried say so.
	cluster.RetryPolicy = nil
	cluster.Logger = driverLogger{cfg.Logger.Named("gocql")}
	return cluster
}

// connect creates a session, giving up when ctx ends. The driver's dial
// cannot be cancelled; it gives up by itself after ConnectTimeout per host,
// and a session that arrives after ctx ended is closed then.
func connect(ctx context.Context, cluster *gocql.ClusterConfig) (*gocql.Session, error) {
	type result struct {
		sess *gocql.Session
		err  error
	}
	done := make(chan result, 1)
	go func() {
		sess, err := cluster.CreateSession()
		done <- result{sess, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("connect to %s: %w", strings.Join(cluster.Hosts, ","), r.err)
		}
		return r.sess, nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.sess != nil {
				r.sess.Close()
			}
		}()
		return nil, fmt.Errorf("connect to %s: %w", strings.Join(cluster.Hosts, ","), ctx.Err())
	}
}

// Kind returns store.KindCassandra.
func (s *Store) Kind() string { return store.KindCassandra }

// Close closes the session; calls after it fail.
func (s *Store) Close() error {
	s.sess.Close()
	return nil
}

// query returns an idempotent statement, retried by the driver.
func (s *Store) query(ctx context.Context, stmt string, args ...any) *gocql.Query {
	return s.sess.Query(stmt, args...).WithContext(ctx).Idempotent(true).RetryPolicy(s.retry)
}

// driverLogger passes gocql's printf-style logs to hclog at debug level:
// while a node is down the driver logs several lines a second, and the
// store's callers log the failures that matter to an operator.
type driverLogger struct{ log hclog.Logger }

func (l driverLogger) Print(v ...any) { l.log.Debug(strings.TrimSpace(fmt.Sprint(v...))) }
func (l driverLogger) Printf(format string, v ...any) {
	l.log.Debug(strings.TrimSpace(fmt.Sprintf(format, v...)))
}
func (l driverLogger) Println(v ...any) { l.log.Debug(strings.TrimSpace(fmt.Sprintln(v...))) }

var _ store.Store = (*Store)(nil)
