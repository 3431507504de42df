package storetest

import (
	"testing"

	"github.com/tincan/tincan/store"
)

// Every entry of a room, message or server event, has an id greater than
// every id handed out before it in that room: across restarts, and across
// the room's deletion and making again.
func testIDsNeverReused(t testing.TB, open Opener) {
	e := start(t, open, store.Options{})
	var last uint64
	newer := func(id uint64, what string) {
		t.Helper()
		if id <= last {
			t.Fatalf("%s has id %d, not greater than %d handed out before", what, id, last)
		}
		last = id
	}
	// entries checks what m reads since it last acknowledged, and
	// acknowledges it.
	entries := func(m store.Member, what string) {
		t.Helper()
		msgs := e.read(m, 0)
		if len(msgs) == 0 {
			t.Fatalf("%s: nothing to read", what)
		}
		for _, msg := range msgs {
			newer(msg.ID, what)
		}
		e.ack(m, msgs[len(msgs)-1].ID)
	}

	a, b := e.join("r"), e.join("r")
	entries(a.Member, "b's peer-joined event")
	for range 3 {
		newer(e.post(a.Member, `"type":"x"`), "a message")
	}
	e.ack(b.Member, last)

	e.restart()
	newer(e.post(b.Member, `"type":"x"`), "a message after a restart")
	e.joinWith(store.JoinRequest{Room: "r", Token: a.Token})
	entries(b.Member, "a's resume, after a restart")

	e.leave(a.Member, store.ReasonLeft)
	e.leave(b.Member, store.ReasonLeft)
	c, d := e.join("r"), e.join("r")
	entries(c.Member, "an event of the room made again")
	newer(e.post(d.Member, `"type":"x"`), "a message of the room made again")

	e.leave(c.Member, store.ReasonLeft)
	e.leave(d.Member, store.ReasonLeft)
	e.restart()
	f := e.join("r")
	newer(e.post(f.Member, `"type":"x"`), "a message kept in the room made again after a restart")
	g := e.join("r")
	entries(f.Member, "an event of the room made again after a restart")
	newer(e.post(f.Member, `"type":"x"`), "a message of the room made again after a restart")
	if msgs := e.read(g.Member, 0); len(msgs) != 2 {
		t.Fatalf("g reads %v, want the kept message and f's second", ids(msgs))
	}
}
