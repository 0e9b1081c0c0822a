//go:build unix

package http

import (
	"net"
	"syscall"
)

// idleCheck tells whether an idle connection can carry a request: the
// upstream has not closed it, and has sent nothing unasked (which would be
// read as the next response). It reads without waiting, in one system call.
type idleCheck struct {
	// raw is nil when the connection has no descriptor; it is then taken
	// on trust.
	raw syscall.RawConn
	// read is readNow bound once, so that a check allocates nothing.
	read func(fd uintptr) bool
	// idle is the result of the last read.
	idle    bool
	scratch [1]byte
}

func (k *idleCheck) init(nc net.Conn) {
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			k.raw = raw
			k.read = k.readNow
		}
	}
}

// usable reports whether the connection is idle and open.
func (k *idleCheck) usable() bool {
	if k.raw == nil {
		return true
	}
	k.idle = false
	if err := k.raw.Read(k.read); err != nil {
		return false
	}
	return k.idle
}

// readNow is one non-blocking read (Go's sockets are non-blocking): a
// connection is idle when the read would block. Any byte or end of file
// means it is not.
func (k *idleCheck) readNow(fd uintptr) bool {
	_, err := syscall.Read(int(fd), k.scratch[:])
	k.idle = err == syscall.EAGAIN
	return true
}
