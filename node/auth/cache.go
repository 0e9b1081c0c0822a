package auth

import (
	"crypto/sha256"
	"encoding/binary"
	"strings"
	"sync"
	"time"
)

// key identifies a cached answer. It holds every parameter sent to the
// server except the password, which only enters through cred, and the
// length: a POST's length varies from one request to the next, and keying
// on it would make nearly every upload a miss. The answer for a given
// identity is assumed not to depend on the length.
//
// key is comparable and made of the caller's own strings, so a lookup
// allocates nothing.
type key struct {
	user, protocol, method, uri, ip string
	// cred is sha256(salt, username, password) with a random per-client
	// salt: a dump of the cache shows no password, and the digests cannot
	// be matched against precomputed tables.
	cred [sha256.Size]byte
}

// credDigest hashes the credentials in a stack buffer when they fit, so
// the hot path does not allocate, and wipes the copy of the password.
func credDigest(salt *[32]byte, user, password string) [sha256.Size]byte {
	var buf [256]byte
	n := len(salt) + binary.MaxVarintLen64 + len(user) + len(password)
	b := buf[:0]
	if n > len(buf) {
		b = make([]byte, 0, n)
	}
	b = append(b, salt[:]...)
	// The length prefix keeps ("ab", "c") and ("a", "bc") apart.
	b = binary.AppendUvarint(b, uint64(len(user)))
	b = append(b, user...)
	b = append(b, password...)
	sum := sha256.Sum256(b)
	clear(b)
	return sum
}

// flightKey is the singleflight key: every field, length-prefixed so that
// distinct keys never collide. It holds the digest, not the password.
func (k *key) flightKey() string {
	var sb strings.Builder
	sb.Grow(len(k.cred) + len(k.user) + len(k.protocol) + len(k.method) + len(k.uri) + len(k.ip) + 5*binary.MaxVarintLen64)
	sb.Write(k.cred[:])
	var n [binary.MaxVarintLen64]byte
	for _, s := range [...]string{k.user, k.protocol, k.method, k.uri, k.ip} {
		sb.Write(binary.AppendUvarint(n[:0], uint64(len(s))))
		sb.WriteString(s)
	}
	return sb.String()
}

// entry is one cached answer: either answer or denied is set. Entries form
// an intrusive doubly linked list per shard, most recently used first.
type entry struct {
	key        key
	answer     Answer
	denied     *DeniedError
	expires    time.Time
	prev, next *entry
}

// shard is a part of the cache with its own lock, so that concurrent hits
// on different identities do not all contend on one mutex.
type shard struct {
	mu  sync.Mutex
	m   map[key]*entry
	lru entry // sentinel: lru.next is the most recently used
	max int
}

// cache is a bounded LRU of answers with per-entry expiry. Expired entries
// are dropped when looked up or when evicted; no goroutine sweeps them, as
// the bound on entries already bounds the memory.
type cache struct {
	shards []shard
}

// newCache uses 16 shards for a large cache and one for a small one, so
// that a small MaxEntries is still an exact LRU bound.
func newCache(maxEntries int) *cache {
	n := 1
	if maxEntries >= 16*64 {
		n = 16
	}
	c := &cache{shards: make([]shard, n)}
	per := (maxEntries + n - 1) / n
	for i := range c.shards {
		s := &c.shards[i]
		s.m = make(map[key]*entry)
		s.lru.next, s.lru.prev = &s.lru, &s.lru
		s.max = per
	}
	return c
}

func (c *cache) shard(k *key) *shard {
	// cred is a uniform hash of the identity: its first byte spreads
	// identities over the shards for free.
	return &c.shards[int(k.cred[0])%len(c.shards)]
}

// get returns the live entry's answer or denial; ok is false on a miss.
func (c *cache) get(k *key, now time.Time) (a Answer, denied *DeniedError, ok bool) {
	s := c.shard(k)
	s.mu.Lock()
	e := s.m[*k]
	if e == nil {
		s.mu.Unlock()
		return Answer{}, nil, false
	}
	if !now.Before(e.expires) {
		s.remove(e)
		s.mu.Unlock()
		return Answer{}, nil, false
	}
	s.moveFront(e)
	a, denied = e.answer, e.denied
	s.mu.Unlock()
	return a, denied, true
}

// put stores an answer or a denial until expires, evicting the least
// recently used entries beyond the bound.
func (c *cache) put(k *key, a Answer, denied *DeniedError, expires time.Time) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.m[*k]; e != nil {
		e.answer, e.denied, e.expires = a, denied, expires
		s.moveFront(e)
		return
	}
	// The key's strings may be slices of a large request buffer: copies
	// keep a cached entry from pinning the buffer for its TTL.
	ck := key{
		user:     strings.Clone(k.user),
		protocol: strings.Clone(k.protocol),
		method:   strings.Clone(k.method),
		uri:      strings.Clone(k.uri),
		ip:       strings.Clone(k.ip),
		cred:     k.cred,
	}
	e := &entry{key: ck, answer: a, denied: denied, expires: expires}
	s.m[ck] = e
	s.pushFront(e)
	for len(s.m) > s.max {
		s.remove(s.lru.prev)
	}
}

// len counts the entries, live or expired.
func (c *cache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

func (s *shard) pushFront(e *entry) {
	e.prev, e.next = &s.lru, s.lru.next
	s.lru.next.prev = e
	s.lru.next = e
}

func (s *shard) unlink(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (s *shard) moveFront(e *entry) {
	if s.lru.next == e {
		return
	}
	s.unlink(e)
	s.pushFront(e)
}

func (s *shard) remove(e *entry) {
	s.unlink(e)
	delete(s.m, e.key)
}
