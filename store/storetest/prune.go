package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/tincan/tincan/store"
)

// Prune deletes an entry once every recipient acknowledged it, not
// before, and says how many it deleted, server events counted like
// messages; what it keeps is still delivered.
func testPruneAcknowledged(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Capacity: 3})
	a, b, c := e.join("r"), e.join("r"), e.join("r") // events: b joined (for a), c joined (for a, b)
	id1, id2 := e.post(a.Member, `"type":"one"`), e.post(a.Member, `"type":"two"`)

	e.wantPrune(0, "nothing was acknowledged")
	e.ack(b.Member, id1)
	e.wantPrune(0, "c and a are behind")
	e.ack(c.Member, id2)
	e.wantPrune(1, "b and c hold id1")
	msgs, cursor := e.readCursor(b.Member, store.ReadRequest{After: 0, Limit: everything})
	if cursor != id1 {
		t.Fatalf("b's cursor %d after the prune, want %d", cursor, id1)
	}
	wantIDs(t, msgs, []uint64{id2}, "b after the prune")
	e.ackAll(a.Member)
	e.wantPrune(2, "a holds both join events, b the second")
	e.ack(b.Member, id2)
	e.wantPrune(1, "b and c hold id2")
	e.wantPrune(0, "nothing left to delete")
	for _, m := range []store.Member{a.Member, b.Member, c.Member} {
		if msgs := e.read(m, 0); len(msgs) != 0 {
			t.Fatalf("%s reads %v with everything acknowledged", m.ID, ids(msgs))
		}
	}
	if n := e.occupants("r"); n != 3 {
		t.Fatalf("%d occupants after pruning, want 3", n)
	}
}

// A recipient who left holds nothing back.
func testPruneLeftRecipients(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Capacity: 3})
	a, b, c := e.join("r"), e.join("r"), e.join("r")
	m := e.post(a.Member, `"type":"x"`) // for b and c
	e.leave(c.Member, store.ReasonLeft)
	e.wantPrune(0, "b has not acknowledged anything")
	e.ack(b.Member, m)
	e.wantPrune(1, "b holds m and c left")
	e.leave(b.Member, store.ReasonLeft)
	e.wantPrune(0, "a has not acknowledged its events")
	msgs := e.read(a.Member, 0)
	if len(msgs) != 4 {
		t.Fatalf("a reads %v, want four events: b and c joined, c and b left", ids(msgs))
	}
	wantEvent(t, msgs[0], "peer-joined", b.ID)
	wantEvent(t, msgs[1], "peer-joined", c.ID)
	wantEvent(t, msgs[2], "peer-left", c.ID)
	wantEvent(t, msgs[3], "peer-left", b.ID)
	e.ack(a.Member, msgs[3].ID)
	e.wantPrune(4, "a holds its events and the others left")
}

// A message kept for the next joiner has no recipient yet, and is kept.
func testPruneKeptForNextJoiner(t testing.TB, open Opener) {
	e := start(t, open, store.Options{})
	a := e.join("r")
	p := e.post(a.Member, `"type":"offer"`)
	e.wantPrune(0, "the message is kept for the next joiner")
	e.ack(a.Member, p) // the sender's cursor is no recipient's
	e.wantPrune(0, "the message is kept for the next joiner, whatever the sender acknowledges")
	b := e.join("r")
	wantIDs(t, e.read(b.Member, 0), []uint64{p}, "the next joiner after prunes")
	e.ack(b.Member, p)
	e.wantPrune(1, "the joiner holds the message")
}

// The engine prunes by itself every PruneEvery: a room full of
// acknowledged entries takes posts again without anyone calling Prune.
func testPruneOnItsOwn(t testing.TB, open Opener) {
	e := start(t, open, store.Options{MaxRoomMessages: 3, PruneEvery: 50 * time.Millisecond})
	a, b := e.join("r"), e.join("r")
	e.post(a.Member, `"type":"x"`)
	e.post(a.Member, `"type":"x"`)
	e.refuseSend(store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}}, store.ErrTooManyMessages)
	e.ackAll(a.Member)
	e.ackAll(b.Member)
	eventually(t, "a room full of acknowledged entries takes a post", func() bool {
		_, err := e.s.Append(t.Context(), store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}})
		if err != nil && !errors.Is(err, store.ErrTooManyMessages) {
			t.Fatalf("append: %v", err)
		}
		return err == nil
	})
}
