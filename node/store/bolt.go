package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"vulcan/ratelimit"
)

// EmbeddedFile is the name of the embedded store's file in its data dir.
const EmbeddedFile = "vulcan.db"

// lockTimeout bounds the wait for the file lock: a second process on the
// same data dir fails fast instead of hanging.
const lockTimeout = time.Second

// pruneChunk bounds the buckets removed by one write transaction, so a
// large prune neither holds the write lock for long nor builds one huge
// transaction in memory.
const pruneChunk = 1000

// schemaVersion is stored in the meta bucket; a file written by a later,
// incompatible layout is refused rather than misread.
const schemaVersion = 1

// Bucket names. The file layout:
//
//	meta          "version" → schemaVersion, 8 bytes big-endian
//	limits        limit id → the limit as JSON
//	state         record key → record data
//	hits          counterID(key) ++ second(bucket) → hits, 8 bytes big-endian
//	hits_by_time  second(bucket) ++ counterID(key) → empty
//
// counterID is the key's length as a uvarint followed by the key: it is
// prefix-free, so the buckets of one counter are one contiguous range of
// hits even when a key is a prefix of another. second(b) is b with its
// sign bit flipped, big-endian, so that byte order is numeric order for
// negative seconds too. Reading a counter's window is then one seek and a
// scan of just that window. hits_by_time is the index by time that makes
// pruning a scan of only the buckets removed; an entry is written when its
// bucket is created, not on every add.
var (
	bucketMeta       = []byte("meta")
	bucketLimits     = []byte("limits")
	bucketState      = []byte("state")
	bucketHits       = []byte("hits")
	bucketHitsByTime = []byte("hits_by_time")
	keyVersion       = []byte("version")
)

// Embedded is the Store kept in a bbolt file, for a lone node and for
// tests. It is safe for concurrent use. bbolt cannot abandon a
// transaction, so ctx is checked before a call starts its work (and
// between the chunks of a prune), not while it waits for the write lock.
type Embedded struct {
	db        *bolt.DB
	log       hclog.Logger
	closeOnce sync.Once
	closeErr  error
}

var _ Store = (*Embedded)(nil)

// OpenEmbedded opens dir/vulcan.db, creating dir and the file as needed.
// Only one process may hold the file: when another does, OpenEmbedded
// gives up after a second with an error saying the data dir is in use.
func OpenEmbedded(dir string, logger hclog.Logger) (*Embedded, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if dir == "" {
		return nil, errors.New("open embedded store: no data dir")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open embedded store: create data dir: %w", err)
	}
	path := filepath.Join(dir, EmbeddedFile)
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: lockTimeout,
		// Pruning frees pages all the time; the hashmap freelist keeps
		// allocation cheap as the free list grows.
		FreelistType: bolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open embedded store %s: data dir is in use by another process (lock not acquired in %s)", path, lockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open embedded store %s: %w", path, err)
	}
	if err := db.Update(initBuckets); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open embedded store %s: %w", path, err)
	}
	logger.Info("embedded store open", "path", path)
	return &Embedded{db: db, log: logger}, nil
}

func initBuckets(tx *bolt.Tx) error {
	for _, name := range [][]byte{bucketMeta, bucketLimits, bucketState, bucketHits, bucketHitsByTime} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(keyVersion); v != nil {
		if len(v) != 8 || binary.BigEndian.Uint64(v) != schemaVersion {
			return fmt.Errorf("file has an unknown schema version %x, want %d", v, schemaVersion)
		}
		return nil
	}
	return meta.Put(keyVersion, binary.BigEndian.AppendUint64(nil, schemaVersion))
}

// Kind reports KindEmbedded.
func (e *Embedded) Kind() string { return KindEmbedded }

// Close closes the file, waiting for transactions in progress; later
// calls return the first call's result.
func (e *Embedded) Close() error {
	e.closeOnce.Do(func() {
		if err := e.db.Close(); err != nil {
			e.closeErr = fmt.Errorf("close embedded store: %w", err)
		}
	})
	return e.closeErr
}

// ListLimits returns every limit, ordered by id.
func (e *Embedded) ListLimits(ctx context.Context) ([]ratelimit.Limit, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list limits: %w", err)
	}
	var out []ratelimit.Limit
	err := e.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLimits).ForEach(func(k, v []byte) error {
			var l ratelimit.Limit
			if err := json.Unmarshal(v, &l); err != nil {
				return fmt.Errorf("limit %q: %w", k, err)
			}
			out = append(out, l)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list limits: %w", err)
	}
	return out, nil
}

// PutLimit creates or replaces the limit with l.ID, which must be set.
func (e *Embedded) PutLimit(ctx context.Context, l ratelimit.Limit) error {
	if l.ID == "" {
		return errors.New("put limit: empty id")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put limit %s: %w", l.ID, err)
	}
	v, err := json.Marshal(l)
	if err != nil {
		return fmt.Errorf("put limit %s: %w", l.ID, err)
	}
	err = e.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLimits).Put([]byte(l.ID), v)
	})
	if err != nil {
		return fmt.Errorf("put limit %s: %w", l.ID, err)
	}
	return nil
}

// DeleteLimit removes a limit; ErrNotFound when there is none.
func (e *Embedded) DeleteLimit(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete limit %s: %w", id, err)
	}
	err := e.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLimits)
		if id == "" || b.Get([]byte(id)) == nil {
			return ErrNotFound
		}
		return b.Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("delete limit %s: %w", id, err)
	}
	return nil
}

// LoadState returns every record, ordered by key.
func (e *Embedded) LoadState(ctx context.Context) ([]Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("load state: %w", err)
	}
	var out []Record
	err := e.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketState).ForEach(func(k, v []byte) error {
			// bbolt's memory is only valid inside the transaction.
			out = append(out, Record{Key: string(k), Data: bytes.Clone(v)})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load state: %w", err)
	}
	return out, nil
}

// SaveState writes recs in one transaction, replacing any with the same
// key. A record with an empty key fails the whole call.
func (e *Embedded) SaveState(ctx context.Context, recs ...Record) error {
	if len(recs) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	err := e.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketState)
		for _, r := range recs {
			if r.Key == "" {
				return errors.New("record with an empty key")
			}
			// A nil Data would read back as a missing record.
			data := r.Data
			if data == nil {
				data = []byte{}
			}
			if err := b.Put([]byte(r.Key), data); err != nil {
				return fmt.Errorf("record %q: %w", r.Key, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

// DeleteState removes the records with keys, in one transaction; keys that
// are not there are ignored.
func (e *Embedded) DeleteState(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete state: %w", err)
	}
	err := e.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketState)
		for _, k := range keys {
			if k == "" {
				continue
			}
			if err := b.Delete([]byte(k)); err != nil {
				return fmt.Errorf("record %q: %w", k, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete state: %w", err)
	}
	return nil
}

// counterID is the prefix of every bucket of key in bucketHits.
func counterID(dst []byte, key string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(key)))
	return append(dst, key...)
}

func appendSecond(dst []byte, sec int64) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(sec)^(1<<63))
}

func readSecond(b []byte) int64 {
	return int64(binary.BigEndian.Uint64(b) ^ (1 << 63))
}

// AddHits adds every delta in one write transaction: all or nothing, so
// a failed call applied none of them.
func (e *Embedded) AddHits(ctx context.Context, deltas []ratelimit.Delta) error {
	if len(deltas) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("add hits: %w", err)
	}
	err := e.db.Update(func(tx *bolt.Tx) error {
		hits, byTime := tx.Bucket(bucketHits), tx.Bucket(bucketHitsByTime)
		var hk, tk []byte
		for _, d := range deltas {
			if d.Hits == 0 {
				continue
			}
			hk = appendSecond(counterID(hk[:0], d.Key), d.Bucket)
			var n int64
			if v := hits.Get(hk); v != nil {
				n = int64(binary.BigEndian.Uint64(v))
			} else {
				tk = append(appendSecond(tk[:0], d.Bucket), hk[:len(hk)-8]...)
				if err := byTime.Put(bytes.Clone(tk), []byte{}); err != nil {
					return fmt.Errorf("index %q at %d: %w", d.Key, d.Bucket, err)
				}
			}
			// bbolt keeps references to keys and values until commit,
			// so each Put gets its own slices (the index's too, above).
			if err := hits.Put(bytes.Clone(hk), binary.BigEndian.AppendUint64(nil, uint64(n+d.Hits))); err != nil {
				return fmt.Errorf("count %q at %d: %w", d.Key, d.Bucket, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("add hits: %w", err)
	}
	return nil
}

// bucketCount is one bucket read by ReadBuckets.
type bucketCount struct{ bucket, hits int64 }

// ReadBuckets calls fn for every bucket of key at or after since whose
// count is not zero, in time order. fn is called after the read
// transaction has ended, so it may call the store.
func (e *Embedded) ReadBuckets(ctx context.Context, key string, since int64, fn func(bucket, hits int64)) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("read buckets of %q: %w", key, err)
	}
	prefix := counterID(nil, key)
	seek := appendSecond(bytes.Clone(prefix), since)
	var found []bucketCount
	err := e.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketHits).Cursor()
		for k, v := c.Seek(seek); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if len(k) != len(prefix)+8 || len(v) != 8 {
				return fmt.Errorf("malformed counter entry %x", k)
			}
			if n := int64(binary.BigEndian.Uint64(v)); n != 0 {
				found = append(found, bucketCount{readSecond(k[len(prefix):]), n})
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read buckets of %q: %w", key, err)
	}
	for _, b := range found {
		fn(b.bucket, b.hits)
	}
	return nil
}

// PruneHits removes every bucket that starts before the given second. It
// walks the time index from its start, so its cost is the number of
// buckets removed, in transactions of up to pruneChunk buckets; ctx is
// checked between them. On an error, the buckets of the chunks already
// committed stay removed.
func (e *Embedded) PruneHits(ctx context.Context, before int64) error {
	limit := appendSecond(nil, before)
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("prune hits before %d: %w", before, err)
		}
		n, err := e.pruneBatch(limit)
		total += n
		if err != nil {
			return fmt.Errorf("prune hits before %d: %w", before, err)
		}
		if n < pruneChunk {
			break
		}
	}
	if total > 0 {
		e.log.Debug("pruned hit buckets", "before", before, "buckets", total)
	}
	return nil
}

// pruneBatch removes up to pruneChunk buckets older than limit (an encoded
// second) and reports how many it removed.
func (e *Embedded) pruneBatch(limit []byte) (int, error) {
	n := 0
	err := e.db.Update(func(tx *bolt.Tx) error {
		hits, byTime := tx.Bucket(bucketHits), tx.Bucket(bucketHitsByTime)
		// Keys are collected first: deleting under a moving cursor
		// can skip entries.
		var old [][]byte
		c := byTime.Cursor()
		for k, _ := c.First(); k != nil && len(old) < pruneChunk; k, _ = c.Next() {
			if len(k) < 8 || bytes.Compare(k[:8], limit) >= 0 {
				break
			}
			old = append(old, bytes.Clone(k))
		}
		hk := make([]byte, 0, 64)
		for _, tk := range old {
			// The time index key is second ++ counterID; the counter's
			// key is counterID ++ second.
			hk = append(append(hk[:0], tk[8:]...), tk[:8]...)
			if err := hits.Delete(hk); err != nil {
				return err
			}
			if err := byTime.Delete(tk); err != nil {
				return err
			}
		}
		n = len(old)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
