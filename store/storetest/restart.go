package storetest

import (
	"bytes"
	"slices"
	"testing"

	"github.com/tincan/tincan/store"
)

// A restart keeps everything: rooms with their passwords and join order,
// members and tokens, messages (broadcast, direct, kept for the next
// joiner), acknowledgements, idempotency keys, secrets, the room count.
func testRestartKeepsEverything(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Capacity: 3, MaxRooms: 4})
	a, b, c := e.join("r"), e.join("r"), e.join("r")
	m1 := e.post(a.Member, `"type":"one"`)
	m2 := e.send(store.Post{From: a.Member, IdempotencyKey: "k", Messages: []store.Draft{{Fields: []byte(`"type":"two"`)}}}).ID
	m3 := e.send(store.Post{From: a.Member, Messages: []store.Draft{{To: c.ID, Fields: []byte(`"type":"three"`)}}}).ID
	e.ack(b.Member, m1)
	p := e.joinWith(store.JoinRequest{Room: "locked", Password: "pw"})
	s := e.join("solo")
	kept := e.post(s.Member, `"type":"kept"`)
	secret, err := e.s.Secret(t.Context(), "turn", 32)
	if err != nil {
		t.Fatal(err)
	}

	e.restart()
	for _, j := range []store.Joined{a, b, c, p, s} {
		if !e.isMember(j) {
			t.Fatalf("%s's token lost in the restart", j.ID)
		}
	}
	for room, want := range map[string]int{"r": 3, "locked": 1, "solo": 1} {
		if n := e.occupants(room); n != want {
			t.Fatalf("%s has %d occupants after the restart, want %d", room, n, want)
		}
	}
	msgs, cursor := e.readCursor(b.Member, store.ReadRequest{After: 0, Limit: everything})
	if cursor != m1 {
		t.Fatalf("b's acknowledgement of %d lost in the restart: cursor %d", m1, cursor)
	}
	wantIDs(t, msgs, []uint64{m2}, "b after the restart")
	wantMessage(t, msgs[0], a.ID, `"type":"two"`)
	msgs = e.read(c.Member, 0)
	wantIDs(t, msgs, []uint64{m1, m2, m3}, "c after the restart")
	wantMessage(t, msgs[2], a.ID, `"type":"three"`)
	msgs = e.read(a.Member, 0)
	if len(msgs) != 2 {
		t.Fatalf("a reads %v after the restart, want the peer-joined events of b and c", ids(msgs))
	}
	wantEvent(t, msgs[0], "peer-joined", b.ID)
	wantEvent(t, msgs[1], "peer-joined", c.ID)

	if r := e.send(store.Post{From: a.Member, IdempotencyKey: "k", Messages: []store.Draft{{Fields: []byte(`"type":"two"`)}}}); !r.Repeat || r.ID != m2 {
		t.Fatalf("a repeat after the restart: %+v, want id %d, Repeat", r, m2)
	}
	again, err := e.s.Secret(t.Context(), "turn", 32)
	if err != nil || !bytes.Equal(again, secret) {
		t.Fatalf("the secret after the restart: %x, %v; before: %x", again, err, secret)
	}
	if next := e.post(a.Member, `"type":"x"`); next <= max(m3, kept) {
		t.Fatalf("a message after the restart has id %d, not greater than %d before", next, max(m3, kept))
	}

	ra := e.joinWith(store.JoinRequest{Room: "r", Token: a.Token})
	if !ra.Resumed || ra.Member != a.Member || !slices.Equal(ra.Peers, []string{b.ID, c.ID}) {
		t.Fatalf("a resumes after the restart: %+v, want peers [%s %s]", ra, b.ID, c.ID)
	}
	e.refuseJoin(store.JoinRequest{Room: "r"}, store.ErrRoomFull)
	e.refuseJoin(store.JoinRequest{Room: "locked", Password: "nope"}, store.ErrBadPassword)
	late := e.join("solo")
	wantIDs(t, e.read(late.Member, 0), []uint64{kept}, "the next joiner of solo, after the restart")
	e.join("fourth")
	e.refuseJoin(store.JoinRequest{Room: "fifth"}, store.ErrTooManyRooms)
}

// Acknowledgements made before Close are durable: after the restart the
// member's cursor is where it was, and what it acknowledged can be pruned.
func testRestartAcknowledgements(t testing.TB, open Opener) {
	e := start(t, open, store.Options{})
	a, b := e.join("r"), e.join("r")
	want := e.postMany(a.Member, 3)
	e.ack(b.Member, want[1])
	e.restart()
	msgs, cursor := e.readCursor(b.Member, store.ReadRequest{After: 0, Limit: everything})
	if cursor != want[1] {
		t.Fatalf("after a restart b's cursor is %d, want %d: the acknowledgement was lost", cursor, want[1])
	}
	wantIDs(t, msgs, want[2:], "b after the restart")
	e.wantPrune(2, "b acknowledged two messages before the restart")
}
