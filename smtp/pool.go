package smtp

import (
	"sync"
	"time"
)

// pool keeps idle upstream connections for reuse, per address. Its methods
// are safe for concurrent use; closing a connection (QUIT) happens outside
// the lock.
type pool struct {
	maxIdle     int
	idleTimeout time.Duration
	maxUses     int

	mu     sync.Mutex
	idle   map[string][]*upConn
	closed bool
}

func newPool(maxIdle int, idleTimeout time.Duration, maxUses int) *pool {
	return &pool{maxIdle: maxIdle, idleTimeout: idleTimeout, maxUses: maxUses, idle: map[string][]*upConn{}}
}

// get returns the most recently used idle connection to addr, or nil.
func (p *pool) get(addr string) *upConn {
	now := time.Now()
	var expired []*upConn
	defer func() {
		// Closed without QUIT: the caller is a session waiting on it.
		for _, u := range expired {
			u.close()
		}
	}()
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.idle[addr]
	for len(l) > 0 {
		u := l[len(l)-1]
		l[len(l)-1] = nil
		l = l[:len(l)-1]
		if now.Sub(u.idleSince) < p.idleTimeout {
			p.set(addr, l)
			return u
		}
		expired = append(expired, u)
	}
	p.set(addr, l)
	return nil
}

func (p *pool) set(addr string, l []*upConn) {
	if len(l) == 0 {
		delete(p.idle, addr)
		return
	}
	p.idle[addr] = l
}

// put returns a connection after a message; it is closed instead when the
// pool is full or closed, or the connection has carried enough messages.
func (p *pool) put(u *upConn) {
	if p.maxIdle < 0 || u.uses >= p.maxUses {
		u.quit()
		return
	}
	u.idleSince = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle[u.addr]) >= p.maxIdle {
		p.mu.Unlock()
		u.quit()
		return
	}
	p.idle[u.addr] = append(p.idle[u.addr], u)
	p.mu.Unlock()
}

// reap closes the connections idle for longer than the idle timeout.
func (p *pool) reap(now time.Time) {
	var expired []*upConn
	p.mu.Lock()
	for addr, l := range p.idle {
		keep := l[:0]
		for _, u := range l {
			if now.Sub(u.idleSince) >= p.idleTimeout {
				expired = append(expired, u)
			} else {
				keep = append(keep, u)
			}
		}
		clear(l[len(keep):])
		p.set(addr, keep)
	}
	p.mu.Unlock()
	for _, u := range expired {
		u.quit()
	}
}

// close closes every idle connection; later puts close theirs.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	all := p.idle
	p.idle = map[string][]*upConn{}
	p.mu.Unlock()
	for _, l := range all {
		for _, u := range l {
			u.quit()
		}
	}
}
