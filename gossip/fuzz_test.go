package gossip

import "testing"

// Every decoder of bytes from the network or the disk has a fuzz target: it
// must never panic, and what it accepts must survive encoding and decoding
// again unchanged, so that nothing is silently altered on the way.

func entrySeeds(f *testing.F) {
	f.Add(EncodeEntry(Entry{Key: "svc/web", Value: []byte(`{"a":1}`), Version: Version{Clock: 9, Node: "n1"}}))
	f.Add(EncodeEntry(Entry{Key: "gone", Version: Version{Clock: 1 << 40, Node: "n2"}, Deleted: true, DeletedAt: 1700000000000}))
	f.Add([]byte{})
	f.Add([]byte{entryFormat, 0, 0xff, 0xff, 0xff})
}

func FuzzDecodeEntry(f *testing.F) {
	entrySeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEntry(b)
		if err != nil {
			return
		}
		again, err := DecodeEntry(EncodeEntry(e))
		if err != nil || compareEntries(again, e) != 0 {
			t.Fatalf("decoded %x as %+v, which round-trips as %+v, %v", b, e, again, err)
		}
	})
}

func FuzzDecodeEntryMsg(f *testing.F) {
	f.Add(encodeEntryMsg(Entry{Key: "k", Value: []byte("v"), Version: Version{Clock: 1, Node: "n"}}))
	f.Add([]byte{byte(msgEntry)})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEntryMsg(b)
		if err != nil {
			return
		}
		again, err := decodeEntryMsg(encodeEntryMsg(e))
		if err != nil || compareEntries(again, e) != 0 {
			t.Fatalf("decoded %x as %+v, which round-trips as %+v, %v", b, e, again, err)
		}
	})
}

func FuzzDecodeLeaveMsg(f *testing.F) {
	f.Add(encodeLeaveMsg(leaveMsg{Node: "n1", Instance: 1 << 62}))
	f.Add([]byte{byte(msgLeave), 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeLeaveMsg(b)
		if err != nil {
			return
		}
		again, err := decodeLeaveMsg(encodeLeaveMsg(m))
		if err != nil || again != m {
			t.Fatalf("decoded %x as %+v, which round-trips as %+v, %v", b, m, again, err)
		}
	})
}

func FuzzDecodeStateMsg(f *testing.F) {
	f.Add(encodeStateMsg(stateMsg{Clock: 5, Entries: []Entry{
		{Key: "a", Value: []byte("1"), Version: Version{Clock: 2, Node: "n"}},
		{Key: "b", Version: Version{Clock: 5, Node: "m"}, Deleted: true, DeletedAt: 3},
	}}))
	f.Add(encodeStateMsg(stateMsg{}))
	f.Add([]byte{byte(msgState), 0, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeStateMsg(b)
		if err != nil {
			return
		}
		again, err := decodeStateMsg(encodeStateMsg(m))
		if err != nil || again.Clock != m.Clock || !sameEntries(again.Entries, m.Entries) {
			t.Fatalf("decoded %x as %+v, which round-trips as %+v, %v", b, m, again, err)
		}
	})
}

func FuzzDecodeMeta(f *testing.F) {
	f.Add(encodeMeta(12345))
	f.Add([]byte{metaFormat})
	f.Fuzz(func(t *testing.T, b []byte) {
		inst, err := decodeMeta(b)
		if err != nil {
			return
		}
		again, err := decodeMeta(encodeMeta(inst))
		if err != nil || again != inst {
			t.Fatalf("decoded %x as %d, which round-trips as %d, %v", b, inst, again, err)
		}
	})
}

// FuzzNotifyMsg feeds arbitrary bytes to the delegate as memberlist would,
// on a Cluster that is not started: whatever arrives, nothing panics and
// the state only ever holds entries that decode.
func FuzzNotifyMsg(f *testing.F) {
	f.Add(encodeEntryMsg(Entry{Key: "k", Value: []byte("v"), Version: Version{Clock: 1, Node: "n"}}))
	f.Add(encodeLeaveMsg(leaveMsg{Node: "n", Instance: 1}))
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, b []byte) {
		c := offlineCluster(t)
		d := &delegate{c: c}
		d.NotifyMsg(b)
		d.MergeRemoteState(b, false)
		for _, e := range c.Snapshot() {
			if _, err := DecodeEntry(EncodeEntry(e)); err != nil {
				t.Fatalf("state holds an entry that does not round-trip: %+v: %v", e, err)
			}
		}
	})
}
