package cassandra

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/gocql/gocql"
	"golang.org/x/sync/errgroup"

	"vulcan/ratelimit"
)

// Statements on the hit counters.
const (
	updateHits     = `UPDATE hits SET counter = counter + ? WHERE hit = ? AND ts = ?`
	selectHits     = `SELECT ts, counter FROM hits WHERE hit = ? AND ts >= ?`
	deleteHits     = `DELETE FROM hits WHERE hit = ? AND ts < ?`
	insertHitKey   = `INSERT INTO hit_keys (slot, hit) VALUES (?, ?)`
	selectSlots    = `SELECT DISTINCT slot FROM hit_keys`
	selectSlotKeys = `SELECT hit FROM hit_keys WHERE slot = ?`
	deleteSlot     = `DELETE FROM hit_keys WHERE slot = ?`
)

// keySlotSeconds is the span of one partition of hit_keys. A key written
// at time t (or into a bucket after t) is listed under t's slot, so every
// bucket listed under a slot starts before the slot's end, and once a
// prune's cut-off passes that end the whole slot can go. Shorter slots
// mean fewer keys visited by each prune; every slot costs each writer one
// registration per active key.
const keySlotSeconds = 600

// batchSize bounds the statements of one batch, all of one partition.
const batchSize = 100

// AddHits adds each delta to its bucket; deltas of one key and bucket are
// summed first. The counters of one key (one partition) go in COUNTER
// batches of up to batchSize, keys in parallel. Counter updates are not
// idempotent, so they are never retried: a failed call may have applied
// some batches and not others.
//
// Before its counters, a key is listed in hit_keys under the current slot,
// once per slot per Store, so that PruneHits can find it; a key whose
// listing fails is not counted.
func (s *Store) AddHits(ctx context.Context, deltas []ratelimit.Delta) error {
	sums := map[string]map[int32]int64{}
	for _, d := range deltas {
		if d.Hits == 0 {
			continue
		}
		if d.Bucket < math.MinInt32 || d.Bucket > math.MaxInt32 {
			return fmt.Errorf("add hits to %q: bucket %d does not fit the schema's 32-bit ts", d.Key, d.Bucket)
		}
		byBucket := sums[d.Key]
		if byBucket == nil {
			byBucket = map[int32]int64{}
			sums[d.Key] = byBucket
		}
		byBucket[int32(d.Bucket)] += d.Hits
	}
	if len(sums) == 0 {
		return nil
	}
	if err := s.registerKeys(ctx, sums); err != nil {
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallelism)
	for key, byBucket := range sums {
		buckets := make([]int32, 0, len(byBucket))
		for b := range byBucket {
			buckets = append(buckets, b)
		}
		slices.Sort(buckets)
		for chunk := range slices.Chunk(buckets, batchSize) {
			g.Go(func() error {
				b := s.sess.NewBatch(gocql.CounterBatch).WithContext(gctx).RetryPolicy(nil)
				for _, ts := range chunk {
					b.Query(updateHits, byBucket[ts], key, ts)
				}
				if err := s.sess.ExecuteBatch(b); err != nil {
					return fmt.Errorf("add hits to %q: %w", key, err)
				}
				return nil
			})
		}
	}
	return g.Wait()
}

// registerKeys lists in hit_keys each key of sums that this Store has not
// yet listed under the slot its buckets belong to.
func (s *Store) registerKeys(ctx context.Context, sums map[string]map[int32]int64) error {
	now := s.now().Unix()
	current := slotOf(now)
	need := map[int32][]string{}

	s.mu.Lock()
	for slot := range s.registered {
		// Writes only ever go to the current slot or later ones.
		if slot < current {
			delete(s.registered, slot)
		}
	}
	for key, byBucket := range sums {
		seen := map[int32]bool{}
		for b := range byBucket {
			// A bucket ahead of this clock (another node's, skewed) is
			// listed under its own slot, so its slot ends after it.
			slot := slotOf(max(now, int64(b)))
			if seen[slot] {
				continue
			}
			seen[slot] = true
			if _, ok := s.registered[slot][key]; !ok {
				need[slot] = append(need[slot], key)
			}
		}
	}
	s.mu.Unlock()

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallelism)
	for slot, keys := range need {
		for chunk := range slices.Chunk(keys, batchSize) {
			g.Go(func() error {
				// One partition per batch; listings are idempotent, so
				// they may be retried.
				b := s.sess.NewBatch(gocql.UnloggedBatch).WithContext(gctx).RetryPolicy(s.retry)
				for _, key := range chunk {
					b.Entries = append(b.Entries, gocql.BatchEntry{
						Stmt: insertHitKey, Args: []any{slot, key}, Idempotent: true,
					})
				}
				if err := s.sess.ExecuteBatch(b); err != nil {
					return fmt.Errorf("list %d hit keys under slot %d: %w", len(chunk), slot, err)
				}
				s.mu.Lock()
				defer s.mu.Unlock()
				if s.registered[slot] == nil {
					s.registered[slot] = map[string]struct{}{}
				}
				for _, key := range chunk {
					s.registered[slot][key] = struct{}{}
				}
				return nil
			})
		}
	}
	return g.Wait()
}

// slotOf returns the hit_keys slot of a Unix second.
func slotOf(sec int64) int32 {
	slot := sec / keySlotSeconds
	if sec < 0 && sec%keySlotSeconds != 0 {
		slot--
	}
	return int32(slot)
}

// ReadBuckets calls fn for every non-zero bucket of key that starts at or
// after since, in order of bucket.
func (s *Store) ReadBuckets(ctx context.Context, key string, since int64, fn func(bucket, hits int64)) error {
	if since > math.MaxInt32 {
		return nil
	}
	since = max(since, math.MinInt32)
	iter := s.query(ctx, selectHits, key, int32(since)).Iter()
	var (
		ts   int32
		hits int64
	)
	for iter.Scan(&ts, &hits) {
		if hits != 0 {
			fn(int64(ts), hits)
		}
	}
	if err := iter.Close(); err != nil {
		return fmt.Errorf("read buckets of %q: %w", key, err)
	}
	return nil
}

// PruneHits removes every bucket that starts before the given Unix second.
// It visits the keys listed in hit_keys under every slot that starts
// before it, deletes each key's old buckets with one range delete, and
// drops the listing of every slot that ended by then: all its buckets are
// gone. So both tables hold what was written since about
// before - keySlotSeconds, plus tombstones until gc_grace_seconds pass.
//
// A counter once deleted cannot be incremented again until its tombstone
// is purged: hits added later to a pruned bucket are lost, which is right,
// as the bucket is outside every window.
func (s *Store) PruneHits(ctx context.Context, before int64) error {
	cut := int32(min(max(before, math.MinInt32), math.MaxInt32))
	var slots []int32
	iter := s.query(ctx, selectSlots).Iter()
	var slot int32
	for iter.Scan(&slot) {
		slots = append(slots, slot)
	}
	if err := iter.Close(); err != nil {
		return fmt.Errorf("prune hits: list slots: %w", err)
	}
	slices.Sort(slots)

	var keys, dropped int
	for _, slot := range slots {
		start := int64(slot) * keySlotSeconds
		if start >= before {
			break
		}
		n, err := s.pruneSlot(ctx, slot, cut)
		keys += n
		if err != nil {
			return fmt.Errorf("prune hits before %d: %w", before, err)
		}
		if start+keySlotSeconds <= before {
			if err := s.query(ctx, deleteSlot, slot).Exec(); err != nil {
				return fmt.Errorf("prune hits before %d: drop slot %d: %w", before, slot, err)
			}
			dropped++
		}
	}
	s.log.Debug("pruned hits", "before", before, "slots", len(slots), "slots_dropped", dropped, "keys", keys)
	return nil
}

// pruneSlot deletes the buckets before cut of every key listed under slot,
// and returns how many keys it visited.
func (s *Store) pruneSlot(ctx context.Context, slot, cut int32) (int, error) {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallelism)
	iter := s.query(gctx, selectSlotKeys, slot).Iter()
	var (
		key string
		n   int
	)
	for gctx.Err() == nil && iter.Scan(&key) {
		n++
		// Scan overwrites key: the goroutine gets its own copy.
		k := key
		g.Go(func() error {
			if err := s.query(gctx, deleteHits, k, cut).Exec(); err != nil {
				return fmt.Errorf("delete buckets of %q: %w", k, err)
			}
			return nil
		})
	}
	iterErr := iter.Close()
	if err := g.Wait(); err != nil {
		return n, err
	}
	if iterErr != nil {
		return n, fmt.Errorf("list keys of slot %d: %w", slot, iterErr)
	}
	return n, nil
}
