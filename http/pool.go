package http

import (
	"sync"
	"time"
)

// connPool keeps idle keep-alive connections per upstream address. The most
// recently used connection is reused first (it is the least likely to have
// been closed by the upstream); connections idle longer than idleTimeout
// are closed by a sweep that runs only while any connection is idle. It is
// safe for concurrent use.
type connPool struct {
	maxIdle     int // per address
	idleTimeout time.Duration

	mu sync.Mutex
	// idle holds each address's idle connections, oldest first.
	idle   map[string][]*upConn
	sweep  *time.Timer
	armed  bool
	closed bool
}

func newConnPool(maxIdle int, idleTimeout time.Duration) *connPool {
	return &connPool{maxIdle: maxIdle, idleTimeout: idleTimeout, idle: map[string][]*upConn{}}
}

// get takes the most recently used idle connection to addr that is still
// usable, or returns nil.
func (p *connPool) get(addr string) *upConn {
	for {
		p.mu.Lock()
		list := p.idle[addr]
		if len(list) == 0 {
			p.mu.Unlock()
			return nil
		}
		c := list[len(list)-1]
		list[len(list)-1] = nil
		p.idle[addr] = list[:len(list)-1]
		p.mu.Unlock()
		if time.Since(c.idleSince) < p.idleTimeout && c.idleCheck.usable() {
			c.reused = true
			return c
		}
		c.close()
	}
}

// put makes c idle, or closes it when its address has maxIdle idle
// connections already or the pool is closed.
func (p *connPool) put(c *upConn) {
	c.idleSince = time.Now()
	p.mu.Lock()
	list := p.idle[c.addr]
	if p.closed || len(list) >= p.maxIdle {
		p.mu.Unlock()
		c.close()
		return
	}
	p.idle[c.addr] = append(list, c)
	if !p.armed {
		p.armed = true
		if p.sweep == nil {
			p.sweep = time.AfterFunc(p.idleTimeout, p.sweepIdle)
		} else {
			p.sweep.Reset(p.idleTimeout)
		}
	}
	p.mu.Unlock()
}

// sweepIdle closes the connections idle for idleTimeout, forgets addresses
// left without any, and runs again when the next one is due.
func (p *connPool) sweepIdle() {
	now := time.Now()
	var expired []*upConn
	var next time.Duration
	p.mu.Lock()
	for addr, list := range p.idle {
		i := 0
		for i < len(list) && now.Sub(list[i].idleSince) >= p.idleTimeout {
			i++
		}
		expired = append(expired, list[:i]...)
		n := copy(list, list[i:])
		clear(list[n:])
		if n == 0 {
			delete(p.idle, addr)
			continue
		}
		p.idle[addr] = list[:n]
		if d := p.idleTimeout - now.Sub(list[0].idleSince); next == 0 || d < next {
			next = d
		}
	}
	p.armed = next > 0 && !p.closed
	if p.armed {
		p.sweep.Reset(next)
	}
	p.mu.Unlock()
	for _, c := range expired {
		c.close()
	}
}

// close closes every idle connection; connections put afterwards are
// closed at once.
func (p *connPool) close() {
	p.mu.Lock()
	p.closed = true
	if p.sweep != nil {
		p.sweep.Stop()
	}
	p.armed = false
	idle := p.idle
	p.idle = map[string][]*upConn{}
	p.mu.Unlock()
	for _, list := range idle {
		for _, c := range list {
			c.close()
		}
	}
}

// idleCount is the number of idle connections to addr.
func (p *connPool) idleCount(addr string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle[addr])
}
