package ratelimit

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// readReq is one key to re-read after a write, with the window it had when
// its deltas were collected.
type readReq struct {
	c            *counter
	since, width int64
}

// probeKey is read to learn whether a store that failed has come back when
// there is nothing else to send it: CounterKey of an empty token and an
// empty limit id, which no limit has.
const probeKey = "|"

// Sync writes the pending hits with one AddHits call, then re-reads the
// touched keys. Run calls it every SyncInterval; calls are serialised.
// The error is the first store error of the round.
func (l *Limiter) Sync(ctx context.Context) error {
	if l.cfg.Store == nil {
		return nil
	}
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	err := l.syncRound(ctx, true)
	l.syncs.Add(1)
	return err
}

// flush writes the pending hits without re-reading: for shutdown.
func (l *Limiter) flush(ctx context.Context) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	return l.syncRound(ctx, false)
}

// syncRound is one write-then-read round. Called with syncMu held.
func (l *Limiter) syncRound(ctx context.Context, read bool) error {
	// Counted in rounds, not by the clock, so that a frozen test clock
	// still refreshes; a flush does not count.
	refresh := false
	if read {
		refresh = l.round%l.refreshEvery == 0
		l.round++
	}
	l.collect(l.unixNow(), refresh)
	defer func() {
		clear(l.batch)
		clear(l.owners)
		clear(l.reads)
		l.batch, l.owners, l.reads = l.batch[:0], l.owners[:0], l.reads[:0]
	}()

	if len(l.batch) > 0 {
		if err := l.write(ctx); err != nil {
			// Reads would fail the same way; the keys wait for the next round.
			l.requeue(l.reads)
			l.setHealth(err)
			return err
		}
	}
	if !read {
		return nil
	}
	if len(l.reads) == 0 { // so nothing was written either
		if l.healthy.Load() {
			return nil
		}
		err := l.probe(ctx)
		l.setHealth(err)
		return err
	}
	err := l.readAll(ctx)
	l.setHealth(err)
	return err
}

// collect takes every shard's touched counters, moving their pending hits
// into l.batch and the counters into l.reads; when a refresh is due it adds
// every other counter whose window holds hits.
func (l *Limiter) collect(sec int64, refresh bool) {
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		if refresh {
			for _, c := range sh.counters {
				// A queued counter is in touched, handled below.
				if !c.queued && c.head < len(c.buckets) {
					l.reads = append(l.reads, readReq{c: c, since: c.windowStart(sec), width: c.width})
				}
			}
		}
		touched := sh.touched
		sh.touched, sh.spare = sh.spare[:0], nil
		for _, c := range touched {
			c.queued = false
			l.batch, l.owners = c.collect(l.batch, l.owners)
			l.reads = append(l.reads, readReq{c: c, since: c.windowStart(sec), width: c.width})
		}
		clear(touched)
		sh.spare = touched[:0]
		sh.mu.Unlock()
	}
}

// write sends l.batch. On failure its hits become local: see the package
// doc for why they are not retried.
func (l *Limiter) write(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, l.cfg.StoreTimeout)
	err := l.cfg.Store.AddHits(wctx, l.batch)
	cancel()
	if err == nil {
		l.deltasWritten.Add(uint64(len(l.batch)))
		return nil
	}
	l.syncErrors.Add(1)
	var hits int64
	for i, d := range l.batch {
		c := l.owners[i]
		c.sh.mu.Lock()
		c.unwrite(d.Bucket, d.Hits)
		c.sh.mu.Unlock()
		hits += d.Hits
	}
	l.unsynced.Add(uint64(hits))
	l.log.Debug("rate-limit hits not written; counted on this node only",
		"deltas", len(l.batch), "hits", hits, "error", err)
	return fmt.Errorf("add %d hit deltas: %w", len(l.batch), err)
}

// readAll re-reads the keys of l.reads with a few workers and merges what
// they read. The first failure stops new reads: the keys not read wait for
// the next round. It fails only when no read succeeds: one slow key is not
// an outage.
func (l *Limiter) readAll(ctx context.Context) error {
	var (
		next, ok atomic.Int64
		stop     atomic.Bool
		mu       sync.Mutex
		first    error
		failed   []readReq
		wg       sync.WaitGroup
	)
	work := func() {
		rd := l.newReader()
		for !stop.Load() {
			i := int(next.Add(1) - 1)
			if i >= len(l.reads) {
				return
			}
			r := l.reads[i]
			cells, err := rd.read(ctx, r.c.key, r.since)
			if err != nil {
				stop.Store(true)
				mu.Lock()
				failed = append(failed, r)
				if first == nil {
					first = err
				}
				mu.Unlock()
				continue
			}
			ok.Add(1)
			c := r.c
			c.sh.mu.Lock()
			if c.width == r.width {
				c.merge(r.since, cells)
			}
			c.sh.mu.Unlock()
		}
	}
	workers := min(l.cfg.ReadConcurrency, len(l.reads))
	for range workers - 1 {
		wg.Go(work)
	}
	work() // this goroutine is a worker too
	wg.Wait()
	if first == nil {
		return nil
	}
	l.syncErrors.Add(uint64(len(failed)))
	// Written hits of these keys stay counted as written until a read
	// succeeds, so they are read again next round, touched or not.
	if n := int(next.Load()); n < len(l.reads) {
		failed = append(failed, l.reads[n:]...)
	}
	l.requeue(failed)
	if ok.Load() > 0 {
		l.log.Debug("some rate-limit counters not re-read", "failed", len(failed), "error", first)
		return nil
	}
	return first
}

// reader reads keys for one worker, reusing its buffer and callback so
// that a read allocates little beyond its context.
type reader struct {
	l     *Limiter
	cells []cell
	fn    func(bucket, hits int64)
}

func (l *Limiter) newReader() *reader {
	r := &reader{l: l}
	r.fn = func(bucket, hits int64) { r.cells = append(r.cells, cell{bucket, hits}) }
	return r
}

// read returns the buckets of key since the given second, sorted; the
// slice is valid until the next read.
func (r *reader) read(ctx context.Context, key string, since int64) ([]cell, error) {
	rctx, cancel := context.WithTimeout(ctx, r.l.cfg.StoreTimeout)
	defer cancel()
	r.cells = r.cells[:0]
	if err := r.l.cfg.Store.ReadBuckets(rctx, key, since, r.fn); err != nil {
		return nil, fmt.Errorf("read hits of %s: %w", key, err)
	}
	cells := r.cells
	if !slices.IsSortedFunc(cells, cmpCell) {
		slices.SortFunc(cells, cmpCell)
	}
	// A store may return a bucket in pieces; merge wants each once.
	out := cells[:0]
	for _, x := range cells {
		if n := len(out); n > 0 && out[n-1].sec == x.sec {
			out[n-1].hits += x.hits
			continue
		}
		out = append(out, x)
	}
	return out, nil
}

func cmpCell(a, b cell) int { return cmp.Compare(a.sec, b.sec) }

// probe asks the store for a key no limit uses, to detect its recovery.
func (l *Limiter) probe(ctx context.Context) error {
	_, err := l.newReader().read(ctx, probeKey, l.unixNow())
	if err != nil {
		l.syncErrors.Add(1)
	}
	return err
}

// requeue puts counters back on their shards' touched lists so that the
// next round reads them again.
func (l *Limiter) requeue(reads []readReq) {
	for _, r := range reads {
		c := r.c
		c.sh.mu.Lock()
		if !c.dead {
			c.sh.touch(c)
		}
		c.sh.mu.Unlock()
	}
}

// setHealth records the outcome of a round, logging only the changes so
// that an outage makes one line, not one per sync.
func (l *Limiter) setHealth(err error) {
	if err == nil {
		if !l.outage.IsZero() {
			l.log.Info("counter store reachable again; syncing rate-limit hits",
				"outage", l.cfg.Now().Sub(l.outage).Round(time.Millisecond))
			l.outage = time.Time{}
		}
		l.healthy.Store(true)
		return
	}
	if errors.Is(err, context.Canceled) {
		return // shutting down, not an outage
	}
	if l.outage.IsZero() {
		l.outage = l.cfg.Now()
		l.log.Warn("counter store unreachable; deciding on local counts",
			"fail_closed", l.cfg.FailClosed, "error", err)
	}
	l.healthy.Store(false)
}

// prune asks the store to drop buckets that no window can cover any more.
// It waits out an outage, which the sync rounds already report.
func (l *Limiter) prune(ctx context.Context) {
	if !l.healthy.Load() {
		return
	}
	before := l.unixNow() - l.set.Load().longest - pruneSlack
	pctx, cancel := context.WithTimeout(ctx, l.cfg.StoreTimeout)
	defer cancel()
	if err := l.cfg.Store.PruneHits(pctx, before); err != nil {
		l.pruneErrors.Add(1)
		l.log.Warn("prune of old rate-limit buckets failed", "before", before, "error", err)
	}
}

// sweep drops the counters whose window has passed and the cached matches
// that can no longer be used, so that idle tokens cost no memory.
func (l *Limiter) sweep() {
	now := l.unixNow()
	set := l.set.Load()
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for ref, c := range sh.counters {
			c.advance(c.windowStart(now))
			if c.head == len(c.buckets) && !c.queued {
				c.dead = true
				delete(sh.counters, ref)
			}
		}
		for k, e := range sh.cache {
			if e.set != set || slices.ContainsFunc(e.lims, func(el entryLimit) bool { return el.c.dead }) {
				delete(sh.cache, k)
			}
		}
		sh.mu.Unlock()
	}
}
