package cassandra

import (
	"context"
	"fmt"

	"github.com/gocql/gocql"
)

// gcGraceSeconds of the tables PruneHits deletes from: 3 hours, Cassandra's
// default max_hint_window, instead of 10 days. Tombstones are purged
// sooner, so pruned counters stop costing disk and reads; the price is that
// a replica down for longer than this and not repaired may bring old
// buckets back. Those lie outside every window, and the next prune of the
// key removes them again.
const gcGraceSeconds = 3 * 3600

// table is one table of the schema.
type table struct {
	name    string
	columns string
	// pruned tables take gcGraceSeconds.
	pruned bool
}

// tables lists the schema, created in this order when missing. limits and
// hits keep the original vulcan's schema.
func tables() []table {
	return []table{
		{name: "limits", columns: `id uuid PRIMARY KEY, auth_token text, protocol text, method text,
			path text, data_size int, period int, threshold int`},
		// One row per (counter key, bucket start in Unix seconds).
		{name: "hits", columns: `hit text, ts int, counter counter, PRIMARY KEY (hit, ts)`, pruned: true},
		// Which counter keys were written in which slot of keySlotSeconds,
		// so that PruneHits visits the keys of old slots instead of
		// scanning hits.
		{name: "hit_keys", columns: `slot int, hit text, PRIMARY KEY (slot, hit)`, pruned: true},
		// The replicated state: one opaque record per key.
		{name: "state", columns: `key text PRIMARY KEY, data blob`},
	}
}

// migrate creates the keyspace and every missing table, and sets
// gc_grace_seconds on tables created before it was part of the schema. It
// runs on a session of its own whose timeout suits schema changes; every
// statement is idempotent, so Open may run it any number of times. Two
// nodes creating the same table at the same moment can still make
// Cassandra (before 5.1) disagree on the table's id: start the first node
// alone on a new keyspace.
func migrate(ctx context.Context, sess *gocql.Session, cfg Config) error {
	ks := cfg.Keyspace
	create := fmt.Sprintf(`CREATE KEYSPACE IF NOT EXISTS %s WITH replication = {'class': 'SimpleStrategy', 'replication_factor': %d}`,
		ks, cfg.ReplicationFactor)
	if err := sess.Query(create).WithContext(ctx).Exec(); err != nil {
		return fmt.Errorf("create keyspace %s: %w", ks, err)
	}
	existing := map[string]int{}
	iter := sess.Query(`SELECT table_name, gc_grace_seconds FROM system_schema.tables WHERE keyspace_name = ?`, ks).
		WithContext(ctx).Iter()
	var name string
	var gcGrace int
	for iter.Scan(&name, &gcGrace) {
		existing[name] = gcGrace
	}
	if err := iter.Close(); err != nil {
		return fmt.Errorf("list tables of %s: %w", ks, err)
	}
	for _, t := range tables() {
		gcGrace, ok := existing[t.name]
		switch {
		case !ok:
			// Qualified by the keyspace: this session uses none.
			stmt := fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s.%s (%s)", ks, t.name, t.columns)
			if t.pruned {
				stmt += fmt.Sprintf(" WITH gc_grace_seconds = %d", gcGraceSeconds)
			}
			if err := sess.Query(stmt).WithContext(ctx).Exec(); err != nil {
				return fmt.Errorf("create table %s.%s: %w", ks, t.name, err)
			}
		case t.pruned && gcGrace != gcGraceSeconds:
			stmt := fmt.Sprintf("ALTER TABLE %s.%s WITH gc_grace_seconds = %d", ks, t.name, gcGraceSeconds)
			if err := sess.Query(stmt).WithContext(ctx).Exec(); err != nil {
				return fmt.Errorf("alter table %s.%s: %w", ks, t.name, err)
			}
		}
	}
	return nil
}
