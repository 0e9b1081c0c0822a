// Package ratelimit decides whether a request is within its caller's limits.
//
// Limits are matched by regular expressions anchored at the start; hits are
// counted in a sliding window of 1-second buckets per (auth token, limit id).
// Each node counts locally and syncs deltas to a CounterStore in batches; a
// decision uses the last cluster buckets read from the store plus the local
// hits not yet reflected in a read.
//
// # Counting exactly once
//
// Every bucket of a counter keeps four numbers: the cluster total last read
// from the store, local hits not yet sent (pending), local hits sent but not
// yet reflected in a read (written), and local hits that will never reach
// the store (local). A decision sums all four. A sync moves pending to
// written, writes the batch with one AddHits call, then re-reads the touched
// keys; a successful read replaces the cluster numbers and zeroes written,
// because the read started after the write finished. Hits taken during the
// write stay pending, so nothing is counted twice or lost.
//
// # Failed writes
//
// AddHits is not idempotent: after a timeout the write may or may not have
// landed, and a blind retry could count it twice. A failed batch is not
// retried: its hits move to local, so this node keeps counting them for the
// rest of their window while the other nodes never see them. If the write
// did land after all, this node counts those hits twice until they leave
// the window: the error is on the side of denying, and only here.
//
// # Buckets
//
// A bucket is one second for periods up to an hour; longer periods use
// buckets of ceil(period/3600) seconds (24 s for a day), so a window never
// spans more than 3601 buckets. A bucket partly inside the window counts
// whole, so coarse buckets can only deny early, never admit extra. Only
// non-empty buckets are kept, 24 bytes each, in a slice ordered by time
// with a running total, so a decision costs O(1) per limit. Counters whose
// window has passed are dropped by a sweep in Run.
//
// # Over-admission
//
// A node sees the other nodes' hits only when it re-reads a key after they
// have synced, so past a threshold the cluster can admit what the other
// nodes admit between two of this node's syncs: about (nodes-1) x the hits
// each admits per SyncInterval, plus a store round trip (measured by
// TestOverAdmissionBounded). Keys touched since the last sync are re-read
// every sync, the others every RefreshInterval; a key new to a node starts
// from its local count until its first re-read.
//
// # Outages
//
// When AddHits fails, or every re-read of a round fails, the store is
// unhealthy: decisions go on from local counts (or, with FailClosed, deny
// every request that some limit applies to), the outage is logged once,
// and each later round tries the store again (a cheap read when there is
// nothing to send) until it answers.
package ratelimit
