//go:build !unix

package http

import "net"

// idleCheck is a no-op where a non-blocking read is not at hand: an idle
// connection is taken on trust, and a dead one is found when it is used
// (and the request sent again when that is safe).
type idleCheck struct{}

func (idleCheck) init(net.Conn) {}

func (idleCheck) usable() bool { return true }
