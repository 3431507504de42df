package storetest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/tincan/tincan/store"
)

// The first member of a room makes it; its token authenticates it; an
// unknown room has no occupants; Capacity defaults to 2.
func testJoinFirstMember(t testing.TB, open Opener) {
	e := start(t, open, store.Options{})
	if n := e.occupants("r"); n != 0 {
		t.Fatalf("a room nobody joined has %d occupants", n)
	}
	a := e.join("r")
	if a.Room != "r" || a.ID == "" || a.Token == "" || a.Resumed || len(a.Peers) != 0 {
		t.Fatalf("first member of r: %+v", a)
	}
	if !e.isMember(a) {
		t.Fatal("the first member's token does not authenticate it")
	}
	if n := e.occupants("r"); n != 1 {
		t.Fatalf("r has %d occupants after one join", n)
	}
	if msgs := e.read(a.Member, 0); len(msgs) != 0 {
		t.Fatalf("the first member reads %v: nobody else is there", ids(msgs))
	}
	for _, token := range []string{"", "not-a-token", a.Token + "x"} {
		if m, err := e.s.Authenticate(t.Context(), token); !errors.Is(err, store.ErrUnauthorized) {
			t.Fatalf("authenticate %q: %+v, %v; want ErrUnauthorized", token, m, err)
		}
	}
	if c := e.s.Capacity(); c != 2 {
		t.Fatalf("Capacity() = %d with Options.Capacity unset, want the default 2", c)
	}
}

// Members get distinct ids and tokens; Peers lists the others in join
// order; a resumed member keeps its place in that order.
func testJoinPeersInJoinOrder(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Capacity: 4})
	a, b, c := e.join("r"), e.join("r"), e.join("r")
	if a.ID == b.ID || b.ID == c.ID || a.ID == c.ID || a.Token == b.Token || b.Token == c.Token || a.Token == c.Token {
		t.Fatalf("ids or tokens repeat: %+v %+v %+v", a, b, c)
	}
	if !slices.Equal(b.Peers, []string{a.ID}) || !slices.Equal(c.Peers, []string{a.ID, b.ID}) {
		t.Fatalf("peers: b sees %v, c sees %v; joined a=%s b=%s", b.Peers, c.Peers, a.ID, b.ID)
	}
	ra := e.joinWith(store.JoinRequest{Room: "r", Token: a.Token})
	if !ra.Resumed || !slices.Equal(ra.Peers, []string{b.ID, c.ID}) {
		t.Fatalf("a resumes: %+v, want peers %v", ra, []string{b.ID, c.ID})
	}
	d := e.join("r")
	if want := []string{a.ID, b.ID, c.ID}; !slices.Equal(d.Peers, want) {
		t.Fatalf("d sees peers %v after a resumed, want %v: a keeps its place", d.Peers, want)
	}
	if n := e.occupants("r"); n != 4 {
		t.Fatalf("%d occupants, want 4", n)
	}
}

// The others get a peer-joined event, the joiner none about itself.
func testJoinPeerJoinedEvent(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Capacity: 3})
	a, b := e.join("r"), e.join("r")
	msgs := e.read(a.Member, 0)
	if len(msgs) != 1 {
		t.Fatalf("a reads %v after b joined, want one peer-joined event", ids(msgs))
	}
	if en := wantEvent(t, msgs[0], "peer-joined", b.ID); en.Resumed {
		t.Fatalf("a new member's event says resumed: %s", msgs[0].Data)
	}
	if got := e.read(b.Member, 0); len(got) != 0 {
		t.Fatalf("b reads %v: nothing happened since it joined", ids(got))
	}
	c := e.join("r")
	forA, forB := e.read(a.Member, 0), e.read(b.Member, 0)
	if len(forA) != 2 || len(forB) != 1 || forA[1].ID != forB[0].ID {
		t.Fatalf("after c joined, a reads %v and b %v; want c's event for both", ids(forA), ids(forB))
	}
	wantEvent(t, forB[0], "peer-joined", c.ID)
}

// Exactly Capacity members get in, however many race for the seats, and a
// refused join leaves no trace; a seat freed by a leave can be taken.
func testJoinCapacity(t testing.TB, open Opener) {
	const capacity = 3
	e := start(t, open, store.Options{Capacity: capacity})
	if c := e.s.Capacity(); c != capacity {
		t.Fatalf("Capacity() = %d, want %d", c, capacity)
	}
	race := func(room string, n int) []store.Joined {
		var mu sync.Mutex
		var in []store.Joined
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				j, err := e.s.Join(t.Context(), store.JoinRequest{Room: room})
				if err != nil && !errors.Is(err, store.ErrRoomFull) {
					t.Errorf("join %s: %v, want success or ErrRoomFull", room, err)
				}
				if err == nil {
					mu.Lock()
					in = append(in, j)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		return in
	}

	// A new room, every seat contended.
	in := race("new", 40)
	if len(in) != capacity {
		t.Fatalf("%d of 40 concurrent joins of a new room got in, capacity %d", len(in), capacity)
	}
	if n := e.occupants("new"); n != capacity {
		t.Fatalf("%d occupants, capacity %d", n, capacity)
	}
	// The first of them hears of the others, and of nobody refused.
	slices.SortFunc(in, func(x, y store.Joined) int { return len(x.Peers) - len(y.Peers) })
	first := in[0]
	var heard []string
	for _, msg := range e.read(first.Member, 0) {
		if en := parse(t, msg); en.Type == "peer-joined" {
			heard = append(heard, en.Peer)
		} else {
			t.Fatalf("the first member reads %s, want peer-joined events only", msg.Data)
		}
	}
	if !sameSet(heard, []string{in[1].ID, in[2].ID}) {
		t.Fatalf("the first member heard of %v joining, want exactly %s and %s", heard, in[1].ID, in[2].ID)
	}

	// A room with a member already: the last seats are contended.
	e.join("busy")
	if late := race("busy", 40); len(late) != capacity-1 {
		t.Fatalf("%d of 40 concurrent joins of a room with one member got in, capacity %d", len(late), capacity)
	}
	e.refuseJoin(store.JoinRequest{Room: "busy"}, store.ErrRoomFull)

	// A leave frees one seat, for one joiner.
	e.leave(in[1].Member, store.ReasonLeft)
	e.join("new")
	e.refuseJoin(store.JoinRequest{Room: "new"}, store.ErrRoomFull)
}

// The first member sets the room's password; a wrong one, or none, is
// refused without a trace; the right one is admitted. A room made without
// a password admits any, and a room made again forgets its old password.
// (Engines hash passwords slowly on purpose: this test and the next keep
// to the few hashes that make the point.)
func testJoinPassword(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Capacity: 3})
	a := e.joinWith(store.JoinRequest{Room: "locked", Password: "pw"})
	e.refuseJoin(store.JoinRequest{Room: "locked", Password: "nope"}, store.ErrBadPassword)
	e.refuseJoin(store.JoinRequest{Room: "locked"}, store.ErrPasswordRequired)
	if n := e.occupants("locked"); n != 1 {
		t.Fatalf("%d occupants after refused joins, want 1", n)
	}
	b := e.joinWith(store.JoinRequest{Room: "locked", Password: "pw"})
	msgs := e.read(a.Member, 0)
	if len(msgs) != 1 {
		t.Fatalf("a reads %v, want b's peer-joined event only (refused joins leave no trace)", ids(msgs))
	}
	wantEvent(t, msgs[0], "peer-joined", b.ID)
	// A member resumes with its token alone: the token is its proof.
	if again := e.joinWith(store.JoinRequest{Room: "locked", Token: a.Token}); !again.Resumed || again.ID != a.ID {
		t.Fatalf("a resuming without the password: %+v; want a resumed", again)
	}

	e.join("open")
	e.joinWith(store.JoinRequest{Room: "open", Password: "late"})
	e.join("open") // the second joiner's password did not lock the room

	e.leave(a.Member, store.ReasonLeft)
	e.leave(b.Member, store.ReasonLeft)
	e.join("locked")
	e.join("locked") // the room made again has no password
}

// Racing first joiners with different passwords: one of them makes the
// room, the other has the wrong password for it.
func testJoinPasswordRace(t testing.TB, open Opener) {
	e := start(t, open, store.Options{})
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = e.s.Join(t.Context(), store.JoinRequest{Room: "contested", Password: fmt.Sprint("p", i)})
		})
	}
	wg.Wait()
	in := 0
	for _, err := range errs {
		switch {
		case err == nil:
			in++
		case !errors.Is(err, store.ErrBadPassword):
			t.Fatalf("racing first joins: %v, want one success and ErrBadPassword", errs)
		}
	}
	if in != 1 {
		t.Fatalf("racing first joins with different passwords: %v, want exactly one in", errs)
	}
}

// A member's token resumes it: same id, no new seat (even in a full room),
// the others told with "resumed":true. A token that is not a member's of
// this room makes an ordinary join.
func testJoinResume(t testing.TB, open Opener) {
	e := start(t, open, store.Options{})
	a, b := e.join("r"), e.join("r")
	e.ackAll(a.Member)
	ra := e.joinWith(store.JoinRequest{Room: "r", Token: a.Token})
	if !ra.Resumed || ra.Member != a.Member || !slices.Equal(ra.Peers, []string{b.ID}) {
		t.Fatalf("a resumes: %+v, want member %+v resumed, peers [%s]", ra, a.Member, b.ID)
	}
	// Whether a resume hands out the same token the contract does not say:
	// what the client relies on is that the one it gets works.
	if m, err := e.s.Authenticate(t.Context(), ra.Token); err != nil || m != a.Member {
		t.Fatalf("the resumed member's token: %+v, %v", m, err)
	}
	msgs := e.read(b.Member, 0)
	if len(msgs) != 1 {
		t.Fatalf("b reads %v after a resumed, want one peer-joined event", ids(msgs))
	}
	if en := wantEvent(t, msgs[0], "peer-joined", a.ID); !en.Resumed {
		t.Fatalf("b reads %s: want \"resumed\":true", msgs[0].Data)
	}
	if got := e.read(a.Member, 0); len(got) != 0 {
		t.Fatalf("a reads %v: its own resume is no event for it", ids(got))
	}
	if n := e.occupants("r"); n != 2 {
		t.Fatalf("%d occupants after a resume, want 2", n)
	}

	// Not a member's token of r: an ordinary join, and r is full.
	x := e.join("other")
	e.refuseJoin(store.JoinRequest{Room: "r", Token: "not-a-token"}, store.ErrRoomFull)
	e.refuseJoin(store.JoinRequest{Room: "r", Token: x.Token}, store.ErrRoomFull)
	// a's token in another room: a new member there; a stays in r.
	elsewhere := e.joinWith(store.JoinRequest{Room: "third", Token: a.Token})
	if elsewhere.Resumed || elsewhere.Room != "third" || elsewhere.Token == a.Token {
		t.Fatalf("a's token joins another room: %+v, want a new member", elsewhere)
	}
	if !e.isMember(a) || !e.isMember(elsewhere) {
		t.Fatal("a member's token joining another room disturbed a member")
	}
}

// MaxRooms rooms exist at most, however many race to make them; joining
// an existing room is not limited; a deleted room frees its place.
func testJoinTooManyRooms(t testing.TB, open Opener) {
	const maxRooms = 3
	e := start(t, open, store.Options{MaxRooms: maxRooms})
	var mu sync.Mutex
	var made []store.Joined
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			j, err := e.s.Join(t.Context(), store.JoinRequest{Room: fmt.Sprint("room", i)})
			if err != nil && !errors.Is(err, store.ErrTooManyRooms) {
				t.Errorf("join a new room: %v, want success or ErrTooManyRooms", err)
			}
			if err == nil {
				mu.Lock()
				made = append(made, j)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if len(made) != maxRooms {
		t.Fatalf("%d of 20 concurrent joins made a room, MaxRooms %d", len(made), maxRooms)
	}
	e.refuseJoin(store.JoinRequest{Room: "one-more"}, store.ErrTooManyRooms)
	if n := e.occupants("one-more"); n != 0 {
		t.Fatalf("a refused room has %d occupants", n)
	}
	e.join(made[0].Room) // an existing room takes members
	e.leave(made[1].Member, store.ReasonLeft)
	e.join("one-more")
	e.refuseJoin(store.JoinRequest{Room: "two-more"}, store.ErrTooManyRooms)
}

// A joiner's profile reaches the others: in their peer-joined entry (the
// fields exactly as store.PeerJoinedFields makes them) and in Profiles of
// later joiners, in the order of Peers. A resume's entry carries the
// member's profile too; a member without one has the empty profile.
func testJoinProfile(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Capacity: 3})
	pa := store.Profile{Identity: "alice", Name: `Alice "A" Ünal`, Metadata: json.RawMessage(`{"team":"blue","n":[1,2]}`)}
	pc := store.Profile{Identity: "carol"}
	a := e.joinWith(store.JoinRequest{Room: "r", Profile: pa})
	if len(a.Peers) != 0 || len(a.Profiles) != 0 {
		t.Fatalf("the first member: %+v, want no peers and no profiles", a)
	}
	b := e.join("r")
	if !slices.Equal(b.Peers, []string{a.ID}) || len(b.Profiles) != 1 || !sameProfile(b.Profiles[0], pa) {
		t.Fatalf("b joins: peers %v, profiles %+v; want [%s] with %+v", b.Peers, b.Profiles, a.ID, pa)
	}
	c := e.joinWith(store.JoinRequest{Room: "r", Profile: pc})
	if !slices.Equal(c.Peers, []string{a.ID, b.ID}) || len(c.Profiles) != 2 || !sameProfile(c.Profiles[0], pa) || !sameProfile(c.Profiles[1], store.Profile{}) {
		t.Fatalf("c joins: peers %v, profiles %+v; want [%s %s] with %+v and the empty profile", c.Peers, c.Profiles, a.ID, b.ID, pa)
	}
	msgs := e.read(a.Member, 0)
	if len(msgs) != 2 {
		t.Fatalf("a reads %v, want the peer-joined entries of b and c", ids(msgs))
	}
	wantFields(t, msgs[0], store.PeerJoinedFields(b.ID, store.Profile{}, false))
	wantFields(t, msgs[1], store.PeerJoinedFields(c.ID, pc, false))
	forB := e.read(b.Member, 0)
	wantIDs(t, forB, []uint64{msgs[1].ID}, "b, after c joined")

	// a resumes with its token, and says nothing of itself: its entry
	// carries the profile it joined with.
	e.ackAll(b.Member)
	ra := e.joinWith(store.JoinRequest{Room: "r", Token: a.Token})
	if !ra.Resumed || !slices.Equal(ra.Peers, []string{b.ID, c.ID}) || len(ra.Profiles) != 2 || !sameProfile(ra.Profiles[1], pc) {
		t.Fatalf("a resumes: %+v, want peers [%s %s] with profiles [{} %+v]", ra, b.ID, c.ID, pc)
	}
	msgs = e.read(b.Member, 0)
	if len(msgs) != 1 {
		t.Fatalf("b reads %v after a resumed, want one peer-joined entry", ids(msgs))
	}
	wantFields(t, msgs[0], store.PeerJoinedFields(a.ID, pa, true))
}

// A join whose identity is that of a member of the room resumes that
// member: same id and place, a fresh token (the old one stops working and
// the member's readers are told, upto 0), no password needed and never
// refused for a full room. Members without an identity never resume each
// other; the identity of a member of another room makes a new member.
func testJoinResumeByIdentity(t testing.TB, open Opener) {
	e := start(t, open, store.Options{})
	pa := store.Profile{Identity: "alice", Name: "Alice"}
	a := e.joinWith(store.JoinRequest{Room: "r", Password: "pw", Profile: pa})
	b := e.joinWith(store.JoinRequest{Room: "r", Password: "pw"})
	e.ackAll(a.Member)
	m := e.post(b.Member, `"type":"hello"`)
	e.ackAll(b.Member)
	in := e.subscribe(a.Member)

	ra := e.joinWith(store.JoinRequest{Room: "r", Profile: pa}) // full, and no password
	if !ra.Resumed || ra.Member != a.Member || ra.Token == "" || ra.Token == a.Token {
		t.Fatalf("alice joins again: %+v, want member %+v resumed with a fresh token", ra, a.Member)
	}
	if !slices.Equal(ra.Peers, []string{b.ID}) || len(ra.Profiles) != 1 || !sameProfile(ra.Profiles[0], store.Profile{}) {
		t.Fatalf("alice resumes: peers %v, profiles %+v; want [%s] with the empty profile", ra.Peers, ra.Profiles, b.ID)
	}
	in.waitFor(t, "of the change of a's token (upto 0) to a's subscriber", func(upto uint64) bool { return upto == 0 })
	if got, err := e.s.Authenticate(t.Context(), a.Token); !errors.Is(err, store.ErrUnauthorized) {
		t.Fatalf("a's old token after a resume by identity: %+v, %v; want ErrUnauthorized", got, err)
	}
	if got, err := e.s.Authenticate(t.Context(), ra.Token); err != nil || got != a.Member {
		t.Fatalf("a's new token: %+v, %v; want %+v", got, err, a.Member)
	}
	wantIDs(t, e.read(a.Member, 0), []uint64{m}, "a after its resume: the same member, its entries kept")
	msgs := e.read(b.Member, 0)
	if len(msgs) != 1 {
		t.Fatalf("b reads %v after alice resumed, want one peer-joined entry", ids(msgs))
	}
	if en := wantEvent(t, msgs[0], "peer-joined", a.ID); !en.Resumed {
		t.Fatalf("b reads %s: want \"resumed\":true", msgs[0].Data)
	}
	if n := e.occupants("r"); n != 2 {
		t.Fatalf("%d occupants after a resume by identity, want 2", n)
	}
	e.refuseJoin(store.JoinRequest{Room: "r", Password: "pw", Profile: store.Profile{Identity: "bob"}}, store.ErrRoomFull)

	// The identity in another room: a new member there.
	x := e.joinWith(store.JoinRequest{Room: "other", Profile: pa})
	if x.Resumed || x.Room != "other" || x.ID == "" {
		t.Fatalf("alice joins another room: %+v, want a new member", x)
	}
	if got, err := e.s.Authenticate(t.Context(), ra.Token); err != nil || got != a.Member {
		t.Fatalf("alice joining another room disturbed her in r: %+v, %v", got, err)
	}
	// No identity: never a resume.
	p, q := e.join("s"), e.join("s")
	if p.ID == q.ID || q.Resumed {
		t.Fatalf("two joins without an identity: %+v and %+v, want two members", p, q)
	}
}

// sameProfile compares profiles, metadata by its bytes (nil and empty alike).
func sameProfile(a, b store.Profile) bool {
	return a.Identity == b.Identity && a.Name == b.Name && bytes.Equal(a.Metadata, b.Metadata)
}

// wantFields checks that msg is exactly {"id":<its id>,<fields>}.
func wantFields(t testing.TB, msg store.Message, fields []byte) {
	t.Helper()
	parse(t, msg)
	want := fmt.Sprintf(`{"id":%d,%s}`, msg.ID, fields)
	if string(msg.Data) != want {
		t.Fatalf("entry %d reads\n\t%s\nwant\n\t%s", msg.ID, msg.Data, want)
	}
}
