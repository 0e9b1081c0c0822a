package upstreams

import "sync/atomic"

// Handle is one pick of an upstream. It counts a request (or an SMTP
// session) in flight from the pick until Release. Its methods are safe for
// concurrent use.
//
// A handle stays valid after Release, so that it can be passed to Pick as
// the upstream to avoid on a retry; for that reason handles are never
// recycled.
type Handle struct {
	m     *member
	trial bool
	flags atomic.Uint32
}

const (
	flagReleased uint32 = 1 << iota
	flagReported
)

// Addr is the address to connect to.
func (h *Handle) Addr() string { return h.m.addr }

// Service is the service of the upstream, or "" for an explicit address
// that no registered upstream has.
func (h *Handle) Service() string { return h.m.service }

// ID is the id of the upstream, or "" for an explicit address that no
// registered upstream has.
func (h *Handle) ID() string { return h.m.id }

// Release ends the request's count in flight. It must be called once the
// request or session is over, whatever its outcome; later calls do nothing.
func (h *Handle) Release() {
	if h.setFlag(flagReleased) {
		h.m.l.inflight.Add(-1)
	}
}

// Failed reports that connecting to the upstream failed: it is marked down
// (and OnHealth called) if it was up; a failed trial doubles its backoff.
// Only the first of Failed and Succeeded counts. It does not release.
func (h *Handle) Failed(err error) {
	if h.setFlag(flagReported) {
		h.m.l.failures.Add(1)
		h.m.fail(h.trial, err)
	}
}

// Succeeded reports that connecting to the upstream worked. After a trial it
// brings the upstream back up (and OnHealth is called); otherwise it does
// nothing. Only the first of Failed and Succeeded counts. It does not
// release.
func (h *Handle) Succeeded() {
	if h.setFlag(flagReported) && h.trial {
		h.m.recover()
	}
}

// setFlag sets f and reports whether this call was the one that set it.
func (h *Handle) setFlag(f uint32) bool {
	return h.flags.Or(f)&f == 0
}
