package gossip

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Version orders the writes to one key: a Lamport clock, with the name of
// the node that wrote it breaking ties between concurrent writes.
type Version struct {
	Clock uint64
	Node  string
}

// Compare returns -1, 0 or +1 as v is older than, equal to or newer than o.
func (v Version) Compare(o Version) int {
	if c := cmp.Compare(v.Clock, o.Clock); c != 0 {
		return c
	}
	return strings.Compare(v.Node, o.Node)
}

// Entry is one key of the replicated state. A deleted entry is a tombstone:
// it carries no value and is kept for the tombstone grace so that the delete
// wins over older writes still travelling through the cluster.
type Entry struct {
	Key       string
	Value     []byte
	Version   Version
	Deleted   bool
	DeletedAt int64 // unix milliseconds of the delete, by the deleting node's clock
}

// Merge returns the newer of a and b. Entries with equal versions (which
// only a node that lost its state and reused a clock can produce) are
// ordered by their content, so Merge is a total order's maximum: it is
// commutative, associative and idempotent, and replicas that see the same
// entries in any order agree.
func Merge(a, b Entry) Entry {
	if compareEntries(b, a) > 0 {
		return b
	}
	return a
}

// compareEntries is the total order behind Merge.
func compareEntries(a, b Entry) int {
	if c := a.Version.Compare(b.Version); c != 0 {
		return c
	}
	// A tombstone beats a write with the same version: deleting is the safer
	// outcome of an ambiguous tie.
	if a.Deleted != b.Deleted {
		if a.Deleted {
			return 1
		}
		return -1
	}
	if c := cmp.Compare(a.DeletedAt, b.DeletedAt); c != 0 {
		return c
	}
	if c := bytes.Compare(a.Value, b.Value); c != 0 {
		return c
	}
	return strings.Compare(a.Key, b.Key)
}

// entryFormat is the first byte of an encoded entry, so that the durable
// form can change without misreading old records.
const entryFormat = 1

const flagDeleted = 1 << 0

// maxClock bounds the clocks accepted from outside: a clock near the top of
// uint64 would wrap on the next local write and make that node's writes lose
// forever.
const maxClock = 1 << 62

// errTruncated reports bytes that end inside a field.
var errTruncated = errors.New("truncated")

// EncodeEntry returns the binary form of e, used both on the wire and by the
// durable store. Tombstones are encoded without a value and live entries
// without a delete time, so the encoding is canonical.
func EncodeEntry(e Entry) []byte {
	return appendEntry(make([]byte, 0, entrySize(e)), e)
}

// entrySize is an upper bound of the encoded size of e.
func entrySize(e Entry) int {
	return 2 + 3*binary.MaxVarintLen64 + len(e.Version.Node) + len(e.Key) + len(e.Value) + binary.MaxVarintLen64
}

func appendEntry(b []byte, e Entry) []byte {
	var flags byte
	if e.Deleted {
		flags |= flagDeleted
	}
	b = append(b, entryFormat, flags)
	b = binary.AppendUvarint(b, e.Version.Clock)
	b = appendString(b, e.Version.Node)
	b = appendString(b, e.Key)
	if e.Deleted {
		return binary.AppendVarint(b, e.DeletedAt)
	}
	b = binary.AppendUvarint(b, uint64(len(e.Value)))
	return append(b, e.Value...)
}

// DecodeEntry parses the output of EncodeEntry. It never panics, whatever
// the input, and the entry it returns shares no memory with b.
func DecodeEntry(b []byte) (Entry, error) {
	r := reader{b: b}
	e, err := r.entry()
	if err != nil {
		return Entry{}, fmt.Errorf("decode entry: %w", err)
	}
	if !r.done() {
		return Entry{}, fmt.Errorf("decode entry: %d trailing bytes", len(r.b))
	}
	return e, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// reader consumes a byte slice field by field; every read checks bounds.
type reader struct {
	b []byte
}

func (r *reader) done() bool { return len(r.b) == 0 }

func (r *reader) byte() (byte, error) {
	if len(r.b) == 0 {
		return 0, errTruncated
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c, nil
}

func (r *reader) uvarint() (uint64, error) {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		return 0, errors.New("bad uvarint")
	}
	r.b = r.b[n:]
	return v, nil
}

func (r *reader) varint() (int64, error) {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		return 0, errors.New("bad varint")
	}
	r.b = r.b[n:]
	return v, nil
}

// bytes returns a length-prefixed field, still aliasing the input.
func (r *reader) bytes() ([]byte, error) {
	n, err := r.uvarint()
	if err != nil {
		return nil, err
	}
	if n > uint64(len(r.b)) {
		return nil, errTruncated
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v, nil
}

func (r *reader) string() (string, error) {
	v, err := r.bytes()
	return string(v), err
}

func (r *reader) entry() (Entry, error) {
	var e Entry
	format, err := r.byte()
	if err != nil {
		return e, err
	}
	if format != entryFormat {
		return e, fmt.Errorf("unknown entry format %d", format)
	}
	flags, err := r.byte()
	if err != nil {
		return e, err
	}
	if flags&^flagDeleted != 0 {
		return e, fmt.Errorf("unknown entry flags %#x", flags)
	}
	if e.Version.Clock, err = r.uvarint(); err != nil {
		return e, fmt.Errorf("clock: %w", err)
	}
	if e.Version.Clock > maxClock {
		return e, fmt.Errorf("clock %d out of range", e.Version.Clock)
	}
	if e.Version.Node, err = r.string(); err != nil {
		return e, fmt.Errorf("node: %w", err)
	}
	if e.Key, err = r.string(); err != nil {
		return e, fmt.Errorf("key: %w", err)
	}
	if flags&flagDeleted != 0 {
		e.Deleted = true
		if e.DeletedAt, err = r.varint(); err != nil {
			return e, fmt.Errorf("deleted at: %w", err)
		}
		return e, nil
	}
	v, err := r.bytes()
	if err != nil {
		return e, fmt.Errorf("value: %w", err)
	}
	if len(v) > 0 {
		e.Value = bytes.Clone(v)
	}
	return e, nil
}
