package storetest

import (
	"errors"
	"sync"
	"testing"

	"github.com/tincan/tincan/store"
)

// A leave tells the others with a peer-left event of its reason; the one
// who left is no member any more, for any call; leaving twice is no error
// and tells nobody twice.
func testLeavePeerLeft(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Capacity: 3})
	a, b, c := e.join("r"), e.join("r"), e.join("r")
	e.ackAll(a.Member)
	e.ackAll(b.Member)
	if e.leave(b.Member, store.ReasonLeft) {
		t.Fatal("Leave reports the room deleted, with two members left")
	}
	for _, m := range []store.Member{a.Member, c.Member} {
		msgs := e.read(m, 0)
		if len(msgs) != 1 {
			t.Fatalf("%s reads %v after b left, want one peer-left event", m.ID, ids(msgs))
		}
		if en := wantEvent(t, msgs[0], "peer-left", b.ID); en.Reason != string(store.ReasonLeft) {
			t.Fatalf("%s reads %s, want reason %q", m.ID, msgs[0].Data, store.ReasonLeft)
		}
	}
	if n := e.occupants("r"); n != 2 {
		t.Fatalf("%d occupants after a leave, want 2", n)
	}

	// b is gone for every call.
	if e.isMember(b) {
		t.Fatal("the token of a member who left still authenticates")
	}
	if _, _, err := e.s.Read(t.Context(), b.Member, store.ReadRequest{Limit: 10}); !errors.Is(err, store.ErrUnauthorized) {
		t.Fatalf("read by a member who left: %v, want ErrUnauthorized", err)
	}
	e.refuseSend(store.Post{From: b.Member, Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}}, store.ErrUnauthorized)
	e.refuseSend(store.Post{From: a.Member, Messages: []store.Draft{{To: b.ID, Fields: []byte(`"type":"x"`)}}}, store.ErrUnknownPeer)
	ghost := store.Member{Room: "r", ID: "ghost"}
	e.refuseSend(store.Post{From: ghost, Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}}, store.ErrUnauthorized)
	if _, _, err := e.s.Read(t.Context(), ghost, store.ReadRequest{Limit: 10}); !errors.Is(err, store.ErrUnauthorized) {
		t.Fatalf("read by a member that never was: %v, want ErrUnauthorized", err)
	}

	// Twice: no error, no second event, no room deleted.
	if e.leave(b.Member, store.ReasonLeft) {
		t.Fatal("a second leave reports the room deleted")
	}
	if msgs := e.read(a.Member, 0); len(msgs) != 1 {
		t.Fatalf("a reads %v after b left twice, want one peer-left event", ids(msgs))
	}
	if got := e.send(store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}}).Recipients; !sameSet(got, []string{c.ID}) {
		t.Fatalf("a broadcast after b left went to %v, want [%s]", got, c.ID)
	}

	// The reason is the caller's.
	e.ackAll(a.Member)
	e.leave(c.Member, store.ReasonTimeout)
	msgs := e.read(a.Member, 0)
	if len(msgs) != 1 {
		t.Fatalf("a reads %v after c left, want one peer-left event", ids(msgs))
	}
	if en := wantEvent(t, msgs[0], "peer-left", c.ID); en.Reason != string(store.ReasonTimeout) {
		t.Fatalf("a reads %s, want reason %q", msgs[0].Data, store.ReasonTimeout)
	}
}

// The last member's leave deletes the room with everything in it: a room
// of the same name made afterwards starts empty, with fresh ids.
func testLeaveLastMemberDeletesRoom(t testing.TB, open Opener) {
	e := start(t, open, store.Options{})
	a, b := e.join("r"), e.join("r")
	e.post(a.Member, `"type":"unread"`)
	e.leave(b.Member, store.ReasonLeft)
	e.post(a.Member, `"type":"kept"`) // for the next joiner, who never comes
	if !e.leave(a.Member, store.ReasonLeft) {
		t.Fatal("the last member's leave does not report the room deleted")
	}
	if n := e.occupants("r"); n != 0 {
		t.Fatalf("a deleted room has %d occupants", n)
	}
	if e.leave(a.Member, store.ReasonLeft) {
		t.Fatal("leaving a deleted room again reports it deleted again")
	}
	if e.isMember(a) {
		t.Fatal("the last member's token still authenticates")
	}

	// Made again: nothing of the old room, not even its kept message, and
	// a's old token makes a new member.
	c := e.joinWith(store.JoinRequest{Room: "r", Token: a.Token})
	if c.Resumed || len(c.Peers) != 0 {
		t.Fatalf("first member of the room made again: %+v", c)
	}
	d := e.join("r")
	if msgs := e.read(d.Member, 0); len(msgs) != 0 {
		t.Fatalf("the room made again hands its second member %v: the old room's messages", ids(msgs))
	}
	msgs := e.read(c.Member, 0)
	if len(msgs) != 1 {
		t.Fatalf("c reads %v, want d's peer-joined event only", ids(msgs))
	}
	wantEvent(t, msgs[0], "peer-joined", d.ID)
	seen := map[string]bool{}
	for _, id := range []string{a.ID, b.ID, c.ID, d.ID} {
		if seen[id] {
			t.Fatalf("member id %s given twice in room r", id)
		}
		seen[id] = true
	}

	// The last two leaving at once: exactly one of them deleted the room.
	var wg sync.WaitGroup
	deleted := make([]bool, 2)
	for i, m := range []store.Member{c.Member, d.Member} {
		wg.Go(func() {
			var err error
			if deleted[i], err = e.s.Leave(t.Context(), m, store.ReasonLeft); err != nil {
				t.Errorf("leave %s: %v", m.ID, err)
			}
		})
	}
	wg.Wait()
	if deleted[0] == deleted[1] {
		t.Fatalf("two last members left at once; room deleted by each: %v, want exactly one", deleted)
	}
	if n := e.occupants("r"); n != 0 {
		t.Fatalf("%d occupants after everyone left", n)
	}
}
