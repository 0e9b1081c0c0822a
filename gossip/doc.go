// Package gossip keeps a key/value state replicated on every node of a
// cluster, over hashicorp/memberlist, and reports the cluster's members.
//
// Every entry carries a version: a Lamport clock with the writing node's
// name as the tie-break. Replicas merge entries by keeping the newer one
// (Merge), so they agree whatever order entries arrive in and however often.
// A delete writes a tombstone, collected after a grace period.
//
// A local change travels three ways: straight to some alive members by UDP,
// as a delta in memberlist's gossip queue (every node that learns something
// new gossips it on), and in the full state exchanged by push/pull, which
// repairs lost packets and brings late joiners up to date. Messages start
// with a one-byte type; their decoders accept any bytes without panicking.
//
// The package knows nothing of what the values mean: callers choose their
// keys and encode their values.
package gossip
