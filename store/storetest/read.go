package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/tincan/tincan/store"
)

// postMany posts n numbered messages from m and returns their ids.
func (e *engine) postMany(from store.Member, n int) []uint64 {
	e.t.Helper()
	out := make([]uint64, n)
	for i := range out {
		out[i] = e.post(from, fmt.Sprintf(`"type":"x","i":%d`, i))
	}
	return out
}

// Read returns entries after After, oldest first, at most Limit of them;
// without Acknowledge, the cursor is After.
func testReadAfterAndLimit(t testing.TB, open Opener) {
	e := start(t, open, store.Options{})
	a, b := e.join("r"), e.join("r")
	want := e.postMany(a.Member, 10)
	read := func(after uint64, limit int) []uint64 {
		t.Helper()
		msgs, cursor := e.readCursor(b.Member, store.ReadRequest{After: after, Limit: limit})
		if cursor != after {
			t.Fatalf("read after %d: cursor %d, want %d (nothing acknowledged)", after, cursor, after)
		}
		return ids(msgs)
	}
	check := func(got, want []uint64, what string) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: got %v, want %v", what, got, want)
		}
	}
	check(read(0, everything), want, "everything")
	check(read(0, 1), want[:1], "limit 1")
	check(read(want[4], 3), want[5:8], "3 after the fifth")
	check(read(want[8], 3), want[9:], "3 after the ninth, with one left")
	check(read(want[9], everything), []uint64{}, "after the last")
	for i, msg := range e.read(b.Member, 0) {
		wantMessage(t, msg, a.ID, fmt.Sprintf(`"type":"x","i":%d`, i))
	}
}

// An acknowledgement moves the member's cursor forward at once and for
// good: a later Read starts at max(After, acknowledged), a smaller one
// does not move it back, and other members are not affected.
func testReadAcknowledge(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Capacity: 3})
	a, b, c := e.join("r"), e.join("r"), e.join("r")
	want := e.postMany(a.Member, 10)
	check := func(q store.ReadRequest, wantCursor uint64, wantMsgs []uint64, what string) {
		t.Helper()
		msgs, cursor := e.readCursor(b.Member, q)
		if cursor != wantCursor {
			t.Fatalf("%s: read %+v: cursor %d, want %d", what, q, cursor, wantCursor)
		}
		wantIDs(t, msgs, wantMsgs, what)
	}
	// b holds everything up to the sixth message (and c's peer-joined
	// event before them).
	check(store.ReadRequest{After: want[5], Limit: 2, Acknowledge: true}, want[5], want[6:8], "the acknowledging read")
	check(store.ReadRequest{After: 0, Limit: everything}, want[5], want[6:], "from 0 after the acknowledgement")
	check(store.ReadRequest{After: want[7], Limit: everything}, want[7], want[8:], "after a later id")
	check(store.ReadRequest{After: want[2], Limit: everything, Acknowledge: true}, want[5], want[6:], "acknowledging less")
	check(store.ReadRequest{After: 0, Limit: everything}, want[5], want[6:], "from 0 after acknowledging less")

	// c reads without acknowledging: nothing moves.
	if msgs, cursor := e.readCursor(c.Member, store.ReadRequest{After: want[9], Limit: everything}); cursor != want[9] || len(msgs) != 0 {
		t.Fatalf("c reads after the last: cursor %d, %v", cursor, ids(msgs))
	}
	msgs, cursor := e.readCursor(c.Member, store.ReadRequest{After: 0, Limit: everything})
	if cursor != 0 {
		t.Fatalf("c never acknowledged, its cursor is %d", cursor)
	}
	wantIDs(t, msgs, want, "c, who acknowledged nothing")
}

// Entries older than the message TTL are not delivered, not even to the
// next joiner, and Prune deletes them; an idempotency key repeats within
// the TTL and not after the prune that follows it.
func testReadTTL(t testing.TB, open Opener) {
	clk := newClock()
	// The client timeout stays the harness's hour: whether Now also drives
	// presence is the engine's business, and nobody must time out here.
	e := start(t, open, store.Options{MessageTTL: time.Minute, Now: clk.Now})
	a, b := e.join("r"), e.join("r") // b's peer-joined event, for a
	m1 := e.send(store.Post{From: a.Member, IdempotencyKey: "k", Messages: []store.Draft{{Fields: []byte(`"type":"one"`)}}}).ID
	clk.advance(30 * time.Second)
	m2 := e.post(a.Member, `"type":"two"`)
	if r := e.send(store.Post{From: a.Member, IdempotencyKey: "k", Messages: []store.Draft{{Fields: []byte(`"type":"one"`)}}}); !r.Repeat || r.ID != m1 {
		t.Fatalf("a repeat within the TTL: %+v, want id %d, Repeat", r, m1)
	}
	wantIDs(t, e.read(b.Member, 0), []uint64{m1, m2}, "b, within the TTL")

	clk.advance(40 * time.Second) // m1 and the event are 70 s old, m2 40 s
	wantIDs(t, e.read(b.Member, 0), []uint64{m2}, "b, once m1 is older than the TTL")
	wantIDs(t, e.read(a.Member, 0), nil, "a, once its event is older than the TTL")
	clk.advance(30 * time.Second)
	wantIDs(t, e.read(b.Member, 0), nil, "b, once everything is older than the TTL")

	s := e.join("solo")
	e.post(s.Member, `"type":"kept"`)
	clk.advance(2 * time.Minute)
	late := e.join("solo") // its peer-joined event, for s, is fresh
	wantIDs(t, e.read(late.Member, 0), nil, "a joiner after the kept message expired")

	e.wantPrune(4, "b's peer-joined event, m1, m2 and the kept message expired")
	if r := e.send(store.Post{From: a.Member, IdempotencyKey: "k", Messages: []store.Draft{{Fields: []byte(`"type":"one"`)}}}); r.Repeat || r.ID == m1 {
		t.Fatalf("a key older than the TTL, after a prune: %+v, want a new message", r)
	}
	e.wantPrune(0, "nothing expired since")
}
