// Package ratelimit decides whether a request is within its caller's limits.
//
// Limits are matched by anchored regular expressions; hits are counted in a
// sliding window of 1-second buckets per (auth token, limit id). Each node
// counts locally and syncs deltas to a counter store in batches; a decision
// uses the last cluster total read from the store plus the local hits not yet
// synced.
package ratelimit

// Limit is one rate limit, in the original vulcan's schema.
type Limit struct {
	ID        string `json:"id"`
	AuthToken string `json:"auth_token"`
	Protocol  string `json:"protocol"`
	Method    string `json:"method"`
	Path      string `json:"path"`
	// DataSize makes the limit apply only to requests of at least this
	// many bytes; 0 applies it to all.
	DataSize int64 `json:"data_size"`
	// Period is the window in seconds.
	Period int `json:"period"`
	// Threshold is the most requests allowed in any Period.
	Threshold int64 `json:"threshold"`
}

// Delta is a number of hits to add to one bucket of one counter.
type Delta struct {
	// Key is the counter: auth token and limit id, as built by CounterKey.
	Key string
	// Bucket is the bucket's start, in Unix seconds.
	Bucket int64
	Hits   int64
}

// CounterKey names the hit counter of a token under a limit.
func CounterKey(token, limitID string) string { return limitID + "|" + token }
