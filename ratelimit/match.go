package ratelimit

import (
	"fmt"
	"regexp"
)

// limitSet is an immutable, compiled set of limits; SetLimits swaps a whole
// new one in, which also invalidates every cached match made against the
// old one.
type limitSet struct {
	limits   []Limit
	compiled []compiledLimit
	// longest is the longest window in seconds, bucket width included, so
	// that pruning never removes a bucket some window still covers.
	longest int64
}

// compiledLimit holds what a decision needs of a limit, ready to use.
type compiledLimit struct {
	token, protocol, method, path *regexp.Regexp // nil matches everything
	period                        int64
	width                         int64 // bucket width in seconds
}

// newLimitSet validates and compiles limits; ids must be present and unique
// because they name the counters.
func newLimitSet(limits []Limit) (*limitSet, error) {
	s := &limitSet{
		limits:   make([]Limit, len(limits)),
		compiled: make([]compiledLimit, len(limits)),
	}
	copy(s.limits, limits)
	seen := make(map[string]bool, len(limits))
	for i, l := range s.limits {
		if l.ID == "" {
			return nil, fmt.Errorf("limit %d: id: must not be empty", i)
		}
		if seen[l.ID] {
			return nil, fmt.Errorf("limit %s: id: duplicate", l.ID)
		}
		seen[l.ID] = true
		if err := Validate(l); err != nil {
			return nil, fmt.Errorf("limit %s: %w", l.ID, err)
		}
		c := &s.compiled[i]
		// Validate has compiled these once already; errors cannot happen.
		c.token, _ = compileAnchored(l.AuthToken)
		c.protocol, _ = compileAnchored(l.Protocol)
		c.method, _ = compileAnchored(l.Method)
		c.path, _ = compileAnchored(l.Path)
		c.period = int64(l.Period)
		c.width = bucketWidth(c.period)
		if w := c.period + c.width; w > s.longest {
			s.longest = w
		}
	}
	return s, nil
}

// match returns the indexes of the limits whose expressions all match req;
// data_size is left to each decision because the length varies per request.
func (s *limitSet) match(req *Request) []int32 {
	var idx []int32
	for i := range s.compiled {
		c := &s.compiled[i]
		if matches(c.token, req.Token) && matches(c.protocol, req.Protocol) &&
			matches(c.method, req.Method) && matches(c.path, req.Path) {
			idx = append(idx, int32(i))
		}
	}
	return idx
}

func matches(re *regexp.Regexp, s string) bool { return re == nil || re.MatchString(s) }

// bucketWidth keeps 1-second buckets up to an hour and widens them beyond,
// so that a window never spans more than maxBuckets buckets.
func bucketWidth(period int64) int64 {
	if period <= maxBuckets {
		return 1
	}
	return (period + maxBuckets - 1) / maxBuckets
}

// matchKey is what decides which limits match.
type matchKey struct {
	token, protocol, method, path string
}

// of reports whether k is req's key.
func (k *matchKey) of(req *Request) bool {
	return k.token == req.Token && k.path == req.Path && k.method == req.Method && k.protocol == req.Protocol
}

// matchEntry caches, for one matchKey, the limits of one set that match and
// the counters of the token under each of them. A sweep that drops a
// counter drops the entries holding it, so an entry's counters are live.
type matchEntry struct {
	key  matchKey
	set  *limitSet
	lims []entryLimit
}

// entryLimit is one matching limit with what a decision reads of it laid
// out together, so that checking ten limits touches few cache lines.
type entryLimit struct {
	c         *counter
	lim       *Limit
	threshold int64
	dataSize  int64
	idx       int32 // in set.limits
}
