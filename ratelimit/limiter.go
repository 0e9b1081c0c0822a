package ratelimit

import (
	"context"
	"fmt"
	"hash/maphash"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Request is what a decision depends on.
type Request struct {
	Token    string
	Protocol string
	Method   string
	Path     string
	// Length is the request's size in bytes; negative (unknown) counts as 0.
	Length int64
	// Recheck marks a second decision on the same request once its real
	// size is known (SMTP's end of DATA): only limits whose data_size is
	// above Declared, the size the first decision used, are checked and
	// counted, so no limit counts the request twice.
	Recheck  bool
	Declared int64
}

// Decision is the answer to one request.
type Decision struct {
	// Allowed says whether the request may proceed; it was counted if so.
	Allowed bool
	// Limit is, when denied, the limit that was hit (of several, the one
	// that frees up last); when allowed, the applicable limit with the
	// fewest remaining hits; nil when no limit applies. It points into the
	// Limiter's current set and must not be modified.
	Limit *Limit
	// Remaining is the hits left under Limit after counting this request.
	Remaining int64
	// RetryAfter is, when denied, the whole seconds until a hit would be
	// allowed again (at least 1); 0 when allowed.
	RetryAfter int
	// Reset is the seconds until Limit's window frees capacity: when
	// allowed, until its oldest counted hit leaves the window; when
	// denied, RetryAfter.
	Reset int
	// StoreDown is set on a denial made only because the counter store is
	// unreachable and the limiter fails closed.
	StoreDown bool
}

// Stats are the Limiter's counters, for metrics.
type Stats struct {
	// Allowed and Denied count decisions.
	Allowed, Denied uint64
	// Syncs counts sync rounds; SyncErrors the store calls that failed in
	// them.
	Syncs, SyncErrors uint64
	// DeltasWritten counts deltas sent by successful AddHits calls.
	DeltasWritten uint64
	// HitsUnsynced counts hits whose write failed: counted by this node
	// only.
	HitsUnsynced uint64
	// PruneErrors counts failed PruneHits calls.
	PruneErrors uint64
	// Counters is the number of (token, limit) windows held in memory.
	Counters int
}

// numShards spreads tokens over independent locks; a power of two.
const numShards = 64

// shard owns the counters and cached matches of the tokens that hash to it.
type shard struct {
	mu sync.Mutex
	// cache is keyed by the hash of the entry's matchKey, which the entry
	// holds to tell a collision from a hit.
	cache    map[uint64]*matchEntry
	counters map[counterRef]*counter
	// touched lists the counters hit or denied since the last sync, each
	// once (counter.queued); spare is the other buffer of the swap.
	touched, spare  []*counter
	allowed, denied uint64
	_               [64]byte // keeps neighbouring shards off one cache line
}

// counterRef names a counter within its shard.
type counterRef struct {
	token, limitID string
}

// Limiter decides on requests against a set of limits. Allow is safe for
// concurrent use and never blocks on the store: the store is only touched
// by Run (or Sync).
type Limiter struct {
	cfg      Config
	clock    *wallClock // nil when Config.Now is injected
	log      hclog.Logger
	seed     maphash.Seed
	cacheCap int // per shard
	set      atomic.Pointer[limitSet]
	shards   [numShards]shard

	// syncMu serialises sync rounds; the fields below it belong to them.
	syncMu       sync.Mutex
	batch        []Delta
	owners       []*counter
	reads        []readReq
	outage       time.Time // start of the current outage; zero when healthy
	round        uint64    // sync rounds so far
	refreshEvery uint64    // rounds between re-reads of idle keys

	running                                    atomic.Bool // Run is called once
	healthy                                    atomic.Bool
	syncs, syncErrors, deltasWritten, unsynced atomic.Uint64
	pruneErrors                                atomic.Uint64
}

// New returns a Limiter with no limits. Call SetLimits, and Run: it syncs
// with cfg.Store and frees the counters of idle tokens.
func New(cfg Config) *Limiter {
	var clock *wallClock
	if cfg.Now == nil {
		clock = newWallClock()
	}
	cfg = cfg.withDefaults()
	l := &Limiter{
		clock:    clock,
		cfg:      cfg,
		log:      cfg.Logger,
		seed:     maphash.MakeSeed(),
		cacheCap: max(cfg.MatchCacheSize/numShards, 1),
		refreshEvery: uint64(max(1,
			(cfg.RefreshInterval+cfg.SyncInterval-1)/cfg.SyncInterval)),
	}
	l.set.Store(&limitSet{})
	for i := range l.shards {
		l.shards[i].cache = make(map[uint64]*matchEntry)
		l.shards[i].counters = make(map[counterRef]*counter)
	}
	l.healthy.Store(true)
	return l
}

// SetLimits replaces the whole set of limits at once. Counters survive for
// the limits whose id stays. On error the current set is kept. Setting the
// same limits again is free: the cached matches stay valid, so a periodic
// reload costs nothing when nothing changed.
func (l *Limiter) SetLimits(limits []Limit) error {
	if slices.Equal(l.set.Load().limits, limits) {
		return nil
	}
	s, err := newLimitSet(limits)
	if err != nil {
		return fmt.Errorf("set limits: %w", err)
	}
	l.set.Store(s)
	return nil
}

// Limits returns a copy of the current set of limits.
func (l *Limiter) Limits() []Limit {
	s := l.set.Load()
	out := make([]Limit, len(s.limits))
	copy(out, s.limits)
	return out
}

// StoreHealthy reports false while the store is unreachable.
func (l *Limiter) StoreHealthy() bool { return l.healthy.Load() }

// Stats returns the current counters.
func (l *Limiter) Stats() Stats {
	st := Stats{
		Syncs:         l.syncs.Load(),
		SyncErrors:    l.syncErrors.Load(),
		DeltasWritten: l.deltasWritten.Load(),
		HitsUnsynced:  l.unsynced.Load(),
		PruneErrors:   l.pruneErrors.Load(),
	}
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		st.Allowed += sh.allowed
		st.Denied += sh.denied
		st.Counters += len(sh.counters)
		sh.mu.Unlock()
	}
	return st
}

// Allow decides on req and counts it in every applicable limit when it is
// allowed; a denied request is counted nowhere.
func (l *Limiter) Allow(req Request) Decision {
	set := l.set.Load()
	th := l.tokenHash(req.Token)
	sh := l.shardFor(th)
	h := l.tupleHash(th, &req)
	sec := l.unixNow()
	synced := l.cfg.Store != nil
	failClosed := synced && l.cfg.FailClosed && !l.healthy.Load()

	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.cache[h]
	if e == nil || e.set != set || !e.key.of(&req) {
		// Regexps run outside the lock: other tokens of the shard go on.
		sh.mu.Unlock()
		idx := set.match(&req)
		sh.mu.Lock()
		e = l.install(sh, h, &req, set, idx)
	}
	// An unknown length (say -1 for a chunked body) is treated as 0, so
	// that limits without data_size still apply.
	skipTo := int64(-1)
	if req.Recheck {
		skipTo = max(req.Declared, 0)
	}
	return l.decide(sh, e, max(req.Length, 0), skipTo, sec, synced, failClosed)
}

// unixNow returns the current Unix second.
func (l *Limiter) unixNow() int64 {
	if l.clock != nil {
		return l.clock.unix()
	}
	return l.cfg.Now().Unix()
}

// reanchor realigns the default clock with the wall clock.
func (l *Limiter) reanchor() {
	if l.clock != nil {
		l.clock.reanchor()
	}
}

// shardOf returns the shard that owns token's counters.
func (l *Limiter) shardOf(token string) *shard { return l.shardFor(l.tokenHash(token)) }

func (l *Limiter) tokenHash(token string) uint64 { return maphash.String(l.seed, token) }

// shardFor returns the shard of the token whose hash is th.
func (l *Limiter) shardFor(th uint64) *shard { return &l.shards[th&(numShards-1)] }

// tupleHash hashes req's matchKey given th, the hash of its token: one
// pass over the other three strings, cheaper than a map's hash of four.
// Collisions only cost a cache miss, so the fields need no unambiguous
// separator.
func (l *Limiter) tupleHash(th uint64, req *Request) uint64 {
	var mh maphash.Hash
	mh.SetSeed(l.seed)
	_, _ = mh.WriteString(req.Protocol)
	_ = mh.WriteByte(0)
	_, _ = mh.WriteString(req.Method)
	_ = mh.WriteByte(0)
	_, _ = mh.WriteString(req.Path)
	return mh.Sum64() ^ (th*0x9e3779b97f4a7c15 + 1)
}

// decide checks every applicable limit of e, then counts the hit in all of
// them if none is exhausted. Called with sh locked.
// Limits with data_size <= skipTo were applied by an earlier decision on
// the same request and are passed over.
func (l *Limiter) decide(sh *shard, e *matchEntry, length, skipTo, sec int64, synced, failClosed bool) Decision {
	var (
		d        = Decision{Allowed: true}
		tightest *entryLimit
		fewest   = int64(math.MaxInt64)
		retry    int64
		first    *entryLimit
	)
	for j := range e.lims {
		el := &e.lims[j]
		if length < el.dataSize || el.dataSize <= skipTo {
			continue
		}
		if first == nil {
			first = el
		}
		c := el.c
		c.advanceTo(sec)
		if c.total >= el.threshold {
			if ra := c.retryAfter(sec, el.threshold); d.Allowed || ra > retry {
				d.Allowed, d.Limit, retry = false, el.lim, ra
			}
			continue
		}
		if rem := el.threshold - c.total - 1; rem < fewest {
			tightest, fewest = el, rem
		}
	}
	if first != nil && d.Allowed && failClosed {
		d.Allowed, d.Limit, d.StoreDown, retry = false, first.lim, true, 1
	}
	if !d.Allowed {
		sh.denied++
		d.RetryAfter, d.Reset = int(retry), int(retry)
		if synced {
			// A denied key still needs fresh cluster numbers to know when
			// the other nodes' hits leave its window.
			for j := range e.lims {
				if el := &e.lims[j]; length >= el.dataSize && el.threshold > 0 {
					sh.touch(el.c)
				}
			}
		}
		return d
	}
	sh.allowed++
	for j := range e.lims {
		el := &e.lims[j]
		if length < el.dataSize || el.dataSize <= skipTo {
			continue
		}
		c := el.c
		if n := len(c.buckets); synced && c.queued && c.retryAt == 0 && n > c.head &&
			c.buckets[n-1].sec == alignDown(sec, c.width) && c.pendingFrom <= c.buckets[n-1].sec {
			// The common case, inlined: another hit in the current bucket,
			// which already holds pending hits.
			c.buckets[n-1].pending++
			c.total++
			continue
		}
		c.add(sec, synced)
		if synced {
			sh.touch(c)
		}
	}
	if tightest != nil {
		d.Limit = tightest.lim
		d.Remaining = fewest
		d.Reset = int(tightest.c.reset(sec))
	}
	return d
}

// touch queues c for the next sync.
func (sh *shard) touch(c *counter) {
	if !c.queued {
		c.queued = true
		sh.touched = append(sh.touched, c)
	}
}

// install caches the limits of set matching key, evicting an arbitrary
// entry when the shard's share of the cache is full. Called with sh locked.
func (l *Limiter) install(sh *shard, h uint64, req *Request, set *limitSet, idx []int32) *matchEntry {
	if e := sh.cache[h]; e != nil && e.set == set && e.key.of(req) {
		return e // another request of the same tuple got here first
	}
	if _, ok := sh.cache[h]; !ok && len(sh.cache) >= l.cacheCap {
		for k := range sh.cache {
			delete(sh.cache, k)
			break
		}
	}
	// The request's strings may be slices of a larger buffer; the cache
	// must not keep that alive.
	key := matchKey{strings.Clone(req.Token), strings.Clone(req.Protocol),
		strings.Clone(req.Method), strings.Clone(req.Path)}
	e := &matchEntry{key: key, set: set, lims: make([]entryLimit, len(idx))}
	for j, i := range idx {
		lim := &set.limits[i]
		e.lims[j] = entryLimit{lim: lim, threshold: lim.Threshold, dataSize: lim.DataSize, idx: i}
	}
	l.resolve(sh, key.token, e)
	sh.cache[h] = e
	return e
}

// resolve points e at the live counters of token under its limits,
// creating them as needed. Called with sh locked.
func (l *Limiter) resolve(sh *shard, token string, e *matchEntry) {
	for j := range e.lims {
		el := &e.lims[j]
		cl := &e.set.compiled[el.idx]
		ref := counterRef{token, el.lim.ID}
		c := sh.counters[ref]
		if c == nil {
			ref.token = strings.Clone(token)
			c = newCounter(CounterKey(ref.token, el.lim.ID), sh)
			sh.counters[ref] = c
		}
		if c.period != cl.period || c.width != cl.width {
			c.configure(cl.period, cl.width)
		}
		el.c = c
	}
}

// Run syncs with the store every SyncInterval, prunes old buckets every
// PruneInterval and drops idle counters, until ctx is done; then it makes
// a final flush of the pending hits. Call it once.
func (l *Limiter) Run(ctx context.Context) {
	if !l.running.CompareAndSwap(false, true) {
		l.log.Error("ratelimit: Run called twice; ignoring the second call")
		return
	}
	defer l.running.Store(false)
	if l.clock != nil {
		defer l.clock.tick()()
	}
	// Sync rounds start on wall-clock multiples of SyncInterval, so every
	// node of a cluster writes and re-reads at about the same instants: a
	// hit admitted anywhere is then seen everywhere within one interval,
	// not up to two as with tickers started whenever each node started.
	syncT := time.NewTimer(untilNextSlot(l.cfg.SyncInterval))
	defer syncT.Stop()
	sweepT := time.NewTicker(sweepInterval)
	defer sweepT.Stop()
	syncC := syncT.C
	if l.cfg.Store == nil {
		syncC = nil
	}
	// Store calls are bounded by StoreTimeout, not cut by ctx: a write cut
	// halfway could not be retried (it may have landed), so the round in
	// progress finishes before the final flush.
	storeCtx := context.WithoutCancel(ctx)
	var pruning sync.WaitGroup
	defer pruning.Wait()
	if l.cfg.Store != nil {
		// Pruning runs beside the syncs so that a slow prune never delays
		// a sync round.
		pruning.Add(1)
		go func() {
			defer pruning.Done()
			pruneT := time.NewTicker(l.cfg.PruneInterval)
			defer pruneT.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-pruneT.C:
					l.prune(storeCtx)
				}
			}
		}()
	}
	for {
		select {
		case <-ctx.Done():
			if l.cfg.Store != nil {
				if err := l.flush(storeCtx); err != nil {
					l.log.Warn("final flush of rate-limit hits failed", "error", err)
				}
			}
			return
		case <-syncC:
			_ = l.Sync(storeCtx)
			l.reanchor()
			syncT.Reset(untilNextSlot(l.cfg.SyncInterval))
		case <-sweepT.C:
			l.reanchor()
			l.sweep()
		}
	}
}

// untilNextSlot is the time left until the next wall-clock multiple of iv.
func untilNextSlot(iv time.Duration) time.Duration {
	now := time.Now()
	return now.Truncate(iv).Add(iv).Sub(now)
}
