package gossip

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// messageType is the first byte of every message this package hands to
// memberlist, so that NotifyMsg and MergeRemoteState can tell them apart and
// new kinds can be added without confusing older nodes.
type messageType uint8

const (
	// msgEntry carries one entry: a delta, gossiped or pushed directly.
	msgEntry messageType = 1
	// msgLeave announces that a node is leaving on purpose, so that its
	// departure is reported "left" rather than "dead".
	msgLeave messageType = 2
	// msgState is the full state exchanged on push/pull.
	msgState messageType = 3
)

// metaFormat is the first byte of the node metadata memberlist gossips.
const metaFormat = 1

// minEntryLen is the size of the smallest encoded entry, used to reject
// element counts the remaining bytes cannot hold before allocating.
const minEntryLen = 6

// encodeEntryMsg frames e as a delta message.
func encodeEntryMsg(e Entry) []byte {
	b := make([]byte, 0, 1+entrySize(e))
	b = append(b, byte(msgEntry))
	return appendEntry(b, e)
}

// decodeEntryMsg parses a delta message, type byte included.
func decodeEntryMsg(b []byte) (Entry, error) {
	if len(b) == 0 || messageType(b[0]) != msgEntry {
		return Entry{}, errors.New("decode entry message: wrong type")
	}
	return DecodeEntry(b[1:])
}

// leaveMsg is the intent of a node to leave. Instance identifies the process
// that announced it, so that a stale intent cannot mark a restarted node with
// the same name as leaving.
type leaveMsg struct {
	Node     string
	Instance uint64
}

func encodeLeaveMsg(m leaveMsg) []byte {
	b := make([]byte, 0, 1+2*binary.MaxVarintLen64+len(m.Node))
	b = append(b, byte(msgLeave))
	b = appendString(b, m.Node)
	return binary.AppendUvarint(b, m.Instance)
}

func decodeLeaveMsg(b []byte) (leaveMsg, error) {
	var m leaveMsg
	if len(b) == 0 || messageType(b[0]) != msgLeave {
		return m, errors.New("decode leave message: wrong type")
	}
	r := reader{b: b[1:]}
	var err error
	if m.Node, err = r.string(); err != nil {
		return m, fmt.Errorf("decode leave message: node: %w", err)
	}
	if m.Instance, err = r.uvarint(); err != nil {
		return m, fmt.Errorf("decode leave message: instance: %w", err)
	}
	if !r.done() {
		return m, fmt.Errorf("decode leave message: %d trailing bytes", len(r.b))
	}
	return m, nil
}

// stateMsg is a node's whole replicated state, tombstones included, with its
// Lamport clock, which may run ahead of every entry it still holds.
type stateMsg struct {
	Clock   uint64
	Entries []Entry
}

func encodeStateMsg(m stateMsg) []byte {
	size := 1 + 2*binary.MaxVarintLen64
	for _, e := range m.Entries {
		size += binary.MaxVarintLen64 + entrySize(e)
	}
	b := make([]byte, 0, size)
	b = append(b, byte(msgState))
	b = binary.AppendUvarint(b, m.Clock)
	b = binary.AppendUvarint(b, uint64(len(m.Entries)))
	var scratch []byte
	for _, e := range m.Entries {
		scratch = appendEntry(scratch[:0], e)
		b = binary.AppendUvarint(b, uint64(len(scratch)))
		b = append(b, scratch...)
	}
	return b
}

func decodeStateMsg(b []byte) (stateMsg, error) {
	var m stateMsg
	if len(b) == 0 || messageType(b[0]) != msgState {
		return m, errors.New("decode state: wrong type")
	}
	r := reader{b: b[1:]}
	var err error
	if m.Clock, err = r.uvarint(); err != nil {
		return m, fmt.Errorf("decode state: clock: %w", err)
	}
	if m.Clock > maxClock {
		return m, fmt.Errorf("decode state: clock %d out of range", m.Clock)
	}
	n, err := r.uvarint()
	if err != nil {
		return m, fmt.Errorf("decode state: count: %w", err)
	}
	if n > uint64(len(r.b)/(1+minEntryLen)) {
		return m, fmt.Errorf("decode state: %d entries cannot fit in %d bytes", n, len(r.b))
	}
	m.Entries = make([]Entry, 0, n)
	for i := range n {
		raw, err := r.bytes()
		if err != nil {
			return m, fmt.Errorf("decode state: entry %d: %w", i, err)
		}
		e, err := DecodeEntry(raw)
		if err != nil {
			return m, fmt.Errorf("decode state: entry %d: %w", i, err)
		}
		m.Entries = append(m.Entries, e)
	}
	if !r.done() {
		return m, fmt.Errorf("decode state: %d trailing bytes", len(r.b))
	}
	return m, nil
}

// encodeMeta is the node metadata: the instance of the running process.
func encodeMeta(instance uint64) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64)
	b = append(b, metaFormat)
	return binary.AppendUvarint(b, instance)
}

func decodeMeta(b []byte) (uint64, error) {
	if len(b) == 0 || b[0] != metaFormat {
		return 0, errors.New("decode meta: unknown format")
	}
	r := reader{b: b[1:]}
	v, err := r.uvarint()
	if err != nil {
		return 0, fmt.Errorf("decode meta: %w", err)
	}
	if !r.done() {
		return 0, fmt.Errorf("decode meta: %d trailing bytes", len(r.b))
	}
	return v, nil
}
