package gossip

import (
	"bytes"
	"slices"
	"sort"
	"strings"
	"time"
)

// table is the replicated state of one node: the newest entry seen for every
// key, and the Lamport clock. It knows nothing of the network and is not safe
// for concurrent use; Cluster guards it.
type table struct {
	entries map[string]Entry
	// keys holds the keys of entries in order, so that a prefix query reads
	// only its own range. Keys are added far less often than rewritten.
	keys  []string
	clock uint64
	grace time.Duration // tombstones older than this are garbage
}

func newTable(grace time.Duration) *table {
	return &table{entries: make(map[string]Entry), grace: grace}
}

// witness lifts the clock to c, so that the next local write is newer than
// everything seen so far.
func (t *table) witness(c uint64) {
	if c > t.clock {
		t.clock = c
	}
}

// put stores e, indexing its key when it is new.
func (t *table) put(e Entry) {
	if _, ok := t.entries[e.Key]; !ok {
		i, _ := slices.BinarySearch(t.keys, e.Key)
		t.keys = slices.Insert(t.keys, i, e.Key)
	}
	t.entries[e.Key] = e
}

// tick advances the clock for a local write. The clock is hybrid: wall
// milliseconds in the high bits, a Lamport counter below them. It stays a
// Lamport clock (never behind anything witnessed), but of two writes made on
// different nodes further apart than their clocks' skew, the later one wins
// even when its node had not yet seen the earlier: an operator's "enable"
// then "drain" on two nodes ends drained.
func (t *table) tick(now time.Time) {
	t.clock = max(t.clock+1, uint64(max(now.UnixMilli(), 0))<<16)
}

// set writes a live entry under a fresh version; it keeps its own copy of
// value.
func (t *table) set(key string, value []byte, node string, now time.Time) Entry {
	t.tick(now)
	e := Entry{Key: key, Version: Version{Clock: t.clock, Node: node}}
	if len(value) > 0 {
		e.Value = bytes.Clone(value)
	}
	t.put(e)
	return e
}

// del writes a tombstone under a fresh version, whether or not the key is
// known here: a node that has not yet seen a write still records the delete.
func (t *table) del(key, node string, now time.Time) Entry {
	t.tick(now)
	e := Entry{Key: key, Version: Version{Clock: t.clock, Node: node}, Deleted: true, DeletedAt: now.UnixMilli()}
	t.put(e)
	return e
}

// apply merges e and returns the entry as stored, reporting whether it
// changed the state. A tombstone already past its grace is dropped when the
// key is unknown, exactly as if it had been collected; otherwise two nodes
// would hand a collected tombstone back and forth on every push/pull.
func (t *table) apply(e Entry, now time.Time) (Entry, bool) {
	e = normalize(e)
	t.witness(e.Version.Clock)
	old, ok := t.entries[e.Key]
	if !ok && e.Deleted && t.expired(e, now) {
		return e, false
	}
	if ok && compareEntries(e, old) <= 0 {
		return old, false
	}
	t.put(e)
	return e, true
}

// normalize drops the fields the encoding would drop, so that an entry
// applied locally equals the one its peers decode.
func normalize(e Entry) Entry {
	if e.Deleted {
		e.Value = nil
	} else {
		e.DeletedAt = 0
		if len(e.Value) == 0 {
			e.Value = nil
		}
	}
	return e
}

func (t *table) expired(e Entry, now time.Time) bool {
	return now.UnixMilli()-e.DeletedAt > t.grace.Milliseconds()
}

// collect removes the tombstones past their grace and returns how many.
func (t *table) collect(now time.Time) int {
	kept := t.keys[:0]
	for _, k := range t.keys {
		if e := t.entries[k]; e.Deleted && t.expired(e, now) {
			delete(t.entries, k)
			continue
		}
		kept = append(kept, k)
	}
	n := len(t.keys) - len(kept)
	clear(t.keys[len(kept):])
	t.keys = kept
	return n
}

// get returns the live entry for key.
func (t *table) get(key string) (Entry, bool) {
	e, ok := t.entries[key]
	if !ok || e.Deleted {
		return Entry{}, false
	}
	return e, true
}

// live returns the live entries under prefix, sorted by key.
func (t *table) live(prefix string) []Entry {
	i, _ := slices.BinarySearch(t.keys, prefix)
	keys := t.keys[i:]
	// Keys under prefix are contiguous from i on.
	keys = keys[:sort.Search(len(keys), func(j int) bool { return !strings.HasPrefix(keys[j], prefix) })]
	if len(keys) == 0 {
		return nil
	}
	out := make([]Entry, 0, len(keys))
	for _, k := range keys {
		if e := t.entries[k]; !e.Deleted {
			out = append(out, e)
		}
	}
	return out
}

// all returns every entry, tombstones included, sorted by key.
func (t *table) all() []Entry {
	out := make([]Entry, 0, len(t.keys))
	for _, k := range t.keys {
		out = append(out, t.entries[k])
	}
	return out
}
