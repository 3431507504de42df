package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/tincan/tincan/store"
)

// The promises of apps.go: the webhook outbox, the admin operations.

// outEvent is what a test expects of an outbox event.
type outEvent struct {
	typ       string
	client    string
	profile   store.Profile
	reason    string
	occupants int
}

// outbox returns every event in the outbox after checking each: its body
// is store.EncodeEvent of the data it carries, and that data agrees with
// the event's Seq, Room, Type and Time; seqs are unique, and increase
// within a room in the order listed.
func (e *engine) outbox() []store.Event {
	e.t.Helper()
	events, err := e.s.Outbox(e.t.Context(), everything)
	if err != nil {
		e.t.Fatalf("outbox: %v", err)
	}
	seen := map[uint64]bool{}
	last := map[string]uint64{}
	for _, ev := range events {
		d := eventData(e.t, ev)
		if d.Seq != ev.Seq || d.Room != ev.Room || d.Type != ev.Type || !d.Time.Equal(ev.Time) {
			e.t.Fatalf("event %+v: its body %s says otherwise", ev, ev.Body)
		}
		if ev.Seq == 0 || seen[ev.Seq] {
			e.t.Fatalf("event seq %d is zero or repeats: %+v", ev.Seq, events)
		}
		seen[ev.Seq] = true
		if ev.Seq <= last[ev.Room] {
			e.t.Fatalf("in room %s, event seq %d follows %d", ev.Room, ev.Seq, last[ev.Room])
		}
		last[ev.Room] = ev.Seq
		if e.opts.Now == nil {
			if d := time.Since(ev.Time); ev.Time.IsZero() || d < -time.Minute || d > time.Hour {
				e.t.Fatalf("event %d at %v, now is %v", ev.Seq, ev.Time, time.Now())
			}
		}
	}
	return events
}

// eventData parses an event's body, and checks that it is what
// store.EncodeEvent makes of it, byte for byte.
func eventData(t testing.TB, ev store.Event) store.EventData {
	t.Helper()
	var body struct {
		Type      string `json:"type"`
		Timestamp string `json:"timestamp"`
		Data      struct {
			Room      string          `json:"room"`
			ClientID  string          `json:"client_id"`
			Identity  string          `json:"identity"`
			Name      string          `json:"name"`
			Metadata  json.RawMessage `json:"metadata"`
			Reason    string          `json:"reason"`
			Occupants *int            `json:"occupants"`
			Seq       *uint64         `json:"seq"`
		} `json:"data"`
	}
	if err := json.Unmarshal(ev.Body, &body); err != nil {
		t.Fatalf("event %d: body %s: %v", ev.Seq, ev.Body, err)
	}
	at, err := time.Parse(time.RFC3339Nano, body.Timestamp)
	if err != nil || body.Data.Occupants == nil || body.Data.Seq == nil {
		t.Fatalf("event %d: body %s lacks a timestamp, occupants or seq (%v)", ev.Seq, ev.Body, err)
	}
	b := body.Data
	d := store.EventData{
		Type: body.Type, Time: at, Room: b.Room, ClientID: b.ClientID,
		Profile: store.Profile{Identity: b.Identity, Name: b.Name, Metadata: b.Metadata},
		Reason:  b.Reason, Occupants: *b.Occupants, Seq: *b.Seq,
	}
	if want := store.EncodeEvent(d); string(want) != string(ev.Body) {
		t.Fatalf("event %d: body\n\t%s\nis not store.EncodeEvent of its data:\n\t%s", ev.Seq, ev.Body, want)
	}
	return d
}

// inRoom lists the events of one room.
func inRoom(events []store.Event, room string) []store.Event {
	var out []store.Event
	for _, ev := range events {
		if ev.Room == room {
			out = append(out, ev)
		}
	}
	return out
}

// wantOutbox checks that events are exactly the wanted ones, in order.
func wantOutbox(t testing.TB, events []store.Event, what string, want ...outEvent) {
	t.Helper()
	show := func() string {
		var s string
		for _, ev := range events {
			s += "\n\t" + string(ev.Body)
		}
		return s
	}
	if len(events) != len(want) {
		t.Fatalf("%s: %d events, want %d:%s", what, len(events), len(want), show())
	}
	for i, w := range want {
		d := eventData(t, events[i])
		if d.Type != w.typ || d.ClientID != w.client || !sameProfile(d.Profile, w.profile) || d.Reason != w.reason || d.Occupants != w.occupants {
			t.Fatalf("%s: event %d is %s, want %+v:%s", what, i, events[i].Body, w, show())
		}
	}
}

// Without Options.Webhooks the outbox stays empty, whatever happens.
func testAppsOutboxOff(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Capacity: 3})
	a := e.joinWith(store.JoinRequest{Room: "r", Profile: store.Profile{Identity: "alice"}})
	b, c := e.join("r"), e.join("r")
	e.post(a.Member, `"type":"x"`)
	e.leave(c.Member, store.ReasonLeft)
	if err := e.s.Kick(t.Context(), b.Member); err != nil {
		t.Fatalf("kick: %v", err)
	}
	e.join("s")
	if err := e.s.CloseRoom(t.Context(), "s"); err != nil {
		t.Fatalf("close room: %v", err)
	}
	e.leave(a.Member, store.ReasonLeft)
	if events := e.outbox(); len(events) != 0 {
		t.Fatalf("without Webhooks the outbox holds %d events", len(events))
	}
}

// With Webhooks: room.created then member.joined on the first join,
// member.joined for each new member (not for a resume, by token or by
// identity), member.left with its reason, room.closed "empty" when the
// last member leaves; occupants after each change; nothing for a message.
func testAppsOutboxJoinAndLeave(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Capacity: 3, Webhooks: true})
	pa := store.Profile{Identity: "alice", Name: "Alice", Metadata: json.RawMessage(`{"role":"host"}`)}
	pc := store.Profile{Identity: "carol"}
	a := e.joinWith(store.JoinRequest{Room: "r", Profile: pa})
	wantOutbox(t, e.outbox(), "after the first join",
		outEvent{typ: store.EventRoomCreated, occupants: 1},
		outEvent{typ: store.EventMemberJoined, client: a.ID, profile: pa, occupants: 1})
	b := e.join("r")
	e.joinWith(store.JoinRequest{Room: "r", Token: a.Token})
	e.joinWith(store.JoinRequest{Room: "r", Profile: pa})
	e.post(b.Member, `"type":"x"`)
	c := e.joinWith(store.JoinRequest{Room: "r", Profile: pc})
	e.leave(c.Member, store.ReasonLeft)
	e.leave(c.Member, store.ReasonLeft)
	e.leave(b.Member, store.ReasonTimeout)
	e.leave(a.Member, store.ReasonLeft)
	created := []outEvent{
		{typ: store.EventRoomCreated, occupants: 1},
		{typ: store.EventMemberJoined, client: a.ID, profile: pa, occupants: 1},
	}
	all := append(created,
		outEvent{typ: store.EventMemberJoined, client: b.ID, occupants: 2},
		outEvent{typ: store.EventMemberJoined, client: c.ID, profile: pc, occupants: 3},
		outEvent{typ: store.EventMemberLeft, client: c.ID, profile: pc, reason: "left", occupants: 2},
		outEvent{typ: store.EventMemberLeft, client: b.ID, reason: "timeout", occupants: 1},
		outEvent{typ: store.EventMemberLeft, client: a.ID, profile: pa, reason: "left", occupants: 0},
		outEvent{typ: store.EventRoomClosed, reason: "empty", occupants: 0},
	)
	before := e.outbox()
	wantOutbox(t, before, "room r's life", all...)

	// Made again: a new room.created, later seqs.
	again := e.joinWith(store.JoinRequest{Room: "r", Profile: pa})
	events := e.outbox()
	wantOutbox(t, events[len(before):], "room r made again",
		outEvent{typ: store.EventRoomCreated, occupants: 1},
		outEvent{typ: store.EventMemberJoined, client: again.ID, profile: pa, occupants: 1})
}

// A removal for silence writes member.left of reason timeout (and
// room.closed for the last member).
func testAppsOutboxTimeout(t testing.TB, open Opener) {
	const timeout = 300 * time.Millisecond
	e := start(t, open, store.Options{ClientTimeout: timeout, Webhooks: true})
	a, b := e.join("r"), e.join("r")
	release := e.s.Hold(a.Member)
	eventually(t, "b, silent, is removed", func() bool { return !e.isMember(b) })
	wantOutbox(t, e.outbox()[3:], "after b timed out",
		outEvent{typ: store.EventMemberLeft, client: b.ID, reason: "timeout", occupants: 1})
	release()
	eventually(t, "a, silent after its release, is removed", func() bool { return !e.isMember(a) })
	wantOutbox(t, e.outbox()[4:], "after a timed out",
		outEvent{typ: store.EventMemberLeft, client: a.ID, reason: "timeout", occupants: 0},
		outEvent{typ: store.EventRoomClosed, reason: "empty", occupants: 0})
}

// Kick writes member.left of reason kicked (room.closed "empty" for the
// last member); CloseRoom writes room.closed of reason "closed" and
// nothing else (its members get no member.left, as they get no peer-left).
func testAppsOutboxKickAndClose(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Capacity: 3, Webhooks: true})
	pb := store.Profile{Identity: "bob", Name: "Bob"}
	e.join("r")
	b := e.joinWith(store.JoinRequest{Room: "r", Profile: pb})
	e.join("r")
	s := e.join("s")
	if err := e.s.Kick(t.Context(), b.Member); err != nil {
		t.Fatalf("kick b: %v", err)
	}
	if err := e.s.CloseRoom(t.Context(), "r"); err != nil {
		t.Fatalf("close r: %v", err)
	}
	if err := e.s.Kick(t.Context(), s.Member); err != nil {
		t.Fatalf("kick s: %v", err)
	}
	events := e.outbox()
	wantOutbox(t, inRoom(events, "r")[4:], "room r after a kick and CloseRoom",
		outEvent{typ: store.EventMemberLeft, client: b.ID, profile: pb, reason: "kicked", occupants: 2},
		outEvent{typ: store.EventRoomClosed, reason: "closed", occupants: 0})
	wantOutbox(t, inRoom(events, "s")[2:], "room s after its only member was kicked",
		outEvent{typ: store.EventMemberLeft, client: s.ID, reason: "kicked", occupants: 0},
		outEvent{typ: store.EventRoomClosed, reason: "empty", occupants: 0})
}

// A refused join, kick or close writes no event.
func testAppsOutboxNoEventForRefusal(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Webhooks: true, MaxRooms: 1})
	a := e.joinWith(store.JoinRequest{Room: "r", Password: "pw"})
	e.joinWith(store.JoinRequest{Room: "r", Password: "pw"})
	before := e.outbox()
	e.refuseJoin(store.JoinRequest{Room: "r", Password: "pw"}, store.ErrRoomFull)
	e.refuseJoin(store.JoinRequest{Room: "r", Password: "pw", Profile: store.Profile{Identity: "zed"}}, store.ErrRoomFull)
	if after := e.outbox(); len(after) != len(before) {
		t.Fatalf("joins refused for a full room wrote events: %d before, %d after", len(before), len(after))
	}
	e.leave(a.Member, store.ReasonLeft)
	before = e.outbox()
	e.refuseJoin(store.JoinRequest{Room: "r", Password: "nope"}, store.ErrBadPassword)
	e.refuseJoin(store.JoinRequest{Room: "r"}, store.ErrPasswordRequired)
	e.refuseJoin(store.JoinRequest{Room: "another"}, store.ErrTooManyRooms)
	if err := e.s.Kick(t.Context(), store.Member{Room: "r", ID: "ghost"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("kick of no member: %v, want ErrNotFound", err)
	}
	if err := e.s.CloseRoom(t.Context(), "nowhere"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("close of no room: %v, want ErrNotFound", err)
	}
	if after := e.outbox(); len(after) != len(before) {
		t.Fatalf("refusals wrote events: %d before, %d after", len(before), len(after))
	}
}

// Events stay until Delivered removes them, across restarts; a second
// Delivered of the same events is no error; a limit is honoured; seqs
// are never reused.
func testAppsOutboxRestartAndDelivered(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Webhooks: true})
	a, b := e.join("r"), e.join("r")
	e.join("s")
	before := e.outbox()
	if len(before) != 5 {
		t.Fatalf("%d events for two rooms and three members, want 5", len(before))
	}
	e.restart()
	same := func(got, want []store.Event, what string) {
		t.Helper()
		if !slices.EqualFunc(got, want, func(x, y store.Event) bool {
			return x.Seq == y.Seq && x.Room == y.Room && x.Type == y.Type && x.Time.Equal(y.Time) && string(x.Body) == string(y.Body)
		}) {
			t.Fatalf("%s: the outbox holds %+v, want %+v", what, got, want)
		}
	}
	same(e.outbox(), before, "after a restart")
	some, err := e.s.Outbox(t.Context(), 2)
	if err != nil || len(some) != 2 {
		t.Fatalf("outbox with limit 2: %d events, %v", len(some), err)
	}

	r := inRoom(before, "r")
	done := r[:2] // room.created and a's member.joined
	for range 2 {
		if err := e.s.Delivered(t.Context(), done); err != nil {
			t.Fatalf("delivered: %v", err)
		}
	}
	rest := slices.DeleteFunc(slices.Clone(before), func(ev store.Event) bool { return ev.Seq == done[0].Seq || ev.Seq == done[1].Seq })
	same(e.outbox(), rest, "after Delivered")
	e.restart()
	same(e.outbox(), rest, "after Delivered and a restart")

	e.leave(b.Member, store.ReasonLeft)
	events := inRoom(e.outbox(), "r")
	last := events[len(events)-1]
	for _, ev := range before {
		if last.Seq == ev.Seq || ev.Room == "r" && last.Seq <= ev.Seq {
			t.Fatalf("b's member.left after a restart has seq %d; before it: %+v", last.Seq, before)
		}
	}
	if err := e.s.Delivered(t.Context(), e.outbox()); err != nil {
		t.Fatalf("delivered: %v", err)
	}
	if events := e.outbox(); len(events) != 0 {
		t.Fatalf("%d events after all were delivered", len(events))
	}
	e.leave(a.Member, store.ReasonLeft)
	if n := len(e.outbox()); n != 2 {
		t.Fatalf("%d events after the last member of r left, want member.left and room.closed", n)
	}
}

// OutboxChanged calls its function after every commit that adds events,
// by when Outbox shows them; cancel ends the calls.
func testAppsOutboxChanged(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Webhooks: true})
	calls := make(chan struct{}, 1024)
	cancel := e.s.OutboxChanged(func() {
		select {
		case calls <- struct{}{}:
		default:
		}
	})
	defer cancel()
	for i, room := range []string{"r", "s"} {
		e.join(room)
		select {
		case <-calls:
		case <-time.After(patience):
			t.Fatalf("no call of OutboxChanged within %v of a join", patience)
		}
		if n := len(e.outbox()); n != 2*(i+1) {
			t.Fatalf("OutboxChanged was called, the outbox holds %d events, want %d", n, 2*(i+1))
		}
	}
	cancel()
	for len(calls) > 0 {
		<-calls
	}
	e.join("t")
	time.Sleep(100 * time.Millisecond)
	if len(calls) > 0 {
		t.Fatal("OutboxChanged called after cancel")
	}
}

// On one engine the claim of the outbox is granted at once, and again
// after a release.
func testAppsClaimOutbox(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Webhooks: true})
	for i := range 2 {
		ctx, cancel := context.WithTimeout(t.Context(), patience)
		lost, release, err := e.s.ClaimOutbox(ctx)
		cancel()
		if err != nil {
			t.Fatalf("claim %d of the outbox: %v", i, err)
		}
		select {
		case <-lost:
			t.Fatalf("claim %d of the outbox lost at once", i)
		default:
		}
		release()
	}
}

// Rooms lists rooms in name order after a name, up to a limit, with their
// occupants, creation time and last activity.
func testAppsRooms(t testing.TB, open Opener) {
	clk := newClock()
	t0 := clk.Now()
	e := start(t, open, store.Options{Capacity: 3, Now: clk.Now})
	e.join("b")
	clk.advance(time.Minute)
	a1 := e.join("a")
	e.join("a")
	e.join("d")
	clk.advance(time.Minute)
	e.join("c")
	e.join("c")
	e.join("c")
	gone := e.join("e")
	e.leave(gone.Member, store.ReasonLeft)

	rooms := func(after string, limit int) []store.RoomInfo {
		t.Helper()
		list, err := e.s.Rooms(t.Context(), after, limit)
		if err != nil {
			t.Fatalf("rooms after %q: %v", after, err)
		}
		for _, r := range list {
			if r.Created.IsZero() || r.LastActive.Before(r.Created) || r.LastActive.After(clk.Now()) {
				t.Fatalf("room %+v: created or last active not sane (now %v)", r, clk.Now())
			}
		}
		return list
	}
	names := func(list []store.RoomInfo) []string {
		var out []string
		for _, r := range list {
			out = append(out, r.Name)
		}
		return out
	}
	all := rooms("", 100)
	if got := names(all); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
		t.Fatalf("rooms: %v, want [a b c d]", got)
	}
	for i, want := range []struct {
		occupants int
		created   time.Time
	}{{2, t0.Add(time.Minute)}, {1, t0}, {3, t0.Add(2 * time.Minute)}, {1, t0.Add(time.Minute)}} {
		if r := all[i]; r.Occupants != want.occupants || !r.Created.Equal(want.created) {
			t.Fatalf("room %s: %+v, want %d occupants, created %v", r.Name, r, want.occupants, want.created)
		}
	}
	for _, page := range []struct {
		after string
		limit int
		want  []string
	}{{"", 2, []string{"a", "b"}}, {"b", 2, []string{"c", "d"}}, {"a0", 1, []string{"b"}}, {"d", 5, nil}} {
		if got := names(rooms(page.after, page.limit)); !slices.Equal(got, page.want) {
			t.Fatalf("rooms after %q, limit %d: %v, want %v", page.after, page.limit, got, page.want)
		}
	}

	// A message and a leave make a room active.
	clk.advance(time.Minute)
	posted := clk.Now()
	e.post(a1.Member, `"type":"x"`)
	if r := rooms("", 1)[0]; r.LastActive.Before(posted) || !r.Created.Equal(t0.Add(time.Minute)) {
		t.Fatalf("room a after a message at %v: %+v", posted, r)
	}
	clk.advance(time.Minute)
	left := clk.Now()
	e.leave(a1.Member, store.ReasonLeft)
	if r := rooms("", 1)[0]; r.LastActive.Before(left) || r.Occupants != 1 {
		t.Fatalf("room a after a leave at %v: %+v", left, r)
	}
	e.restart()
	if got := rooms("", 100); len(got) != 4 || !got[1].Created.Equal(t0) || !got[0].Created.Equal(t0.Add(time.Minute)) {
		t.Fatalf("rooms after a restart: %+v", got)
	}
}

// Room describes a room and its members in join order, with their
// profiles, when they joined first (a resume keeps it) and whether they
// listen.
func testAppsRoom(t testing.TB, open Opener) {
	clk := newClock()
	t0 := clk.Now()
	e := start(t, open, store.Options{Capacity: 3, Now: clk.Now})
	pa := store.Profile{Identity: "alice", Name: "Alice", Metadata: json.RawMessage(`[1,"two"]`)}
	pc := store.Profile{Identity: "carol", Name: "Carol"}
	a := e.joinWith(store.JoinRequest{Room: "r", Profile: pa})
	clk.advance(time.Minute)
	b := e.join("r")
	clk.advance(time.Minute)
	c := e.joinWith(store.JoinRequest{Room: "r", Profile: pc})
	clk.advance(time.Minute)
	e.joinWith(store.JoinRequest{Room: "r", Token: a.Token})
	e.joinWith(store.JoinRequest{Room: "r", Profile: pc})
	release := e.s.Hold(b.Member)

	room := func() (store.RoomInfo, []store.MemberInfo) {
		t.Helper()
		info, members, err := e.s.Room(t.Context(), "r")
		if err != nil {
			t.Fatalf("room r: %v", err)
		}
		return info, members
	}
	info, members := room()
	if info.Name != "r" || info.Occupants != 3 || !info.Created.Equal(t0) || info.LastActive.Before(t0.Add(2*time.Minute)) || info.LastActive.After(clk.Now()) {
		t.Fatalf("room r: %+v, want 3 occupants, created %v, last active at least %v", info, t0, t0.Add(2*time.Minute))
	}
	want := []struct {
		id        string
		profile   store.Profile
		joined    time.Time
		listening bool
	}{{a.ID, pa, t0, false}, {b.ID, store.Profile{}, t0.Add(time.Minute), true}, {c.ID, pc, t0.Add(2 * time.Minute), false}}
	if len(members) != len(want) {
		t.Fatalf("room r has members %+v, want %d", members, len(want))
	}
	for i, w := range want {
		if m := members[i]; m.ID != w.id || !sameProfile(m.Profile, w.profile) || !m.Joined.Equal(w.joined) || m.Listening != w.listening {
			t.Fatalf("member %d of r: %+v, want %s with %+v, joined %v, listening %v", i, m, w.id, w.profile, w.joined, w.listening)
		}
	}
	release()
	e.leave(c.Member, store.ReasonLeft)
	if info, members = room(); info.Occupants != 2 || len(members) != 2 || members[0].ID != a.ID || members[1].ID != b.ID {
		t.Fatalf("room r after c left: %+v, %+v", info, members)
	}
	e.restart()
	if _, members = room(); len(members) != 2 || !sameProfile(members[0].Profile, pa) || !members[0].Joined.Equal(t0) {
		t.Fatalf("room r after a restart: %+v", members)
	}
}

// Room, Kick and CloseRoom of what does not exist are ErrNotFound.
func testAppsNotFound(t testing.TB, open Opener) {
	e := start(t, open, store.Options{})
	a := e.join("r")
	if _, _, err := e.s.Room(t.Context(), "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("room of no room: %v, want ErrNotFound", err)
	}
	for _, m := range []store.Member{{Room: "nope", ID: a.ID}, {Room: "r", ID: "ghost"}} {
		if err := e.s.Kick(t.Context(), m); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("kick %+v: %v, want ErrNotFound", m, err)
		}
	}
	if err := e.s.CloseRoom(t.Context(), "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("close of no room: %v, want ErrNotFound", err)
	}
	e.leave(a.Member, store.ReasonLeft)
	if _, _, err := e.s.Room(t.Context(), "r"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("room of a deleted room: %v, want ErrNotFound", err)
	}
	if err := e.s.CloseRoom(t.Context(), "r"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("close of a deleted room: %v, want ErrNotFound", err)
	}
}

// wantRefused checks that the kicked or closed member's token and reads
// are refused with want.
func (e *engine) wantRefused(j store.Joined, want error) {
	e.t.Helper()
	if m, err := e.s.Authenticate(e.t.Context(), j.Token); !errors.Is(err, want) {
		e.t.Fatalf("authenticate %s: %+v, %v; want %v", j.ID, m, err, want)
	}
	if _, _, err := e.s.Read(e.t.Context(), j.Member, store.ReadRequest{Limit: 10}); !errors.Is(err, want) {
		e.t.Fatalf("read by %s: %v; want %v", j.ID, err, want)
	}
}

// Kick removes a member as a leave would, with reason kicked: the others
// are told, its readers are told, and its token and reads answer
// ErrKicked; the last member's kick deletes the room.
func testAppsKick(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Capacity: 3})
	a, b, c := e.join("r"), e.join("r"), e.join("r")
	e.ackAll(a.Member)
	e.ackAll(b.Member)
	in := e.subscribe(b.Member)
	if err := e.s.Kick(t.Context(), b.Member); err != nil {
		t.Fatalf("kick b: %v", err)
	}
	in.waitFor(t, "of b's removal (upto 0) to b's subscriber", func(upto uint64) bool { return upto == 0 })
	e.wantRefused(b, store.ErrKicked)
	for _, m := range []store.Member{a.Member, c.Member} {
		got := e.peerLefts(m)
		if len(got) != 1 || got[0].Peer != b.ID || got[0].Reason != string(store.ReasonKicked) {
			t.Fatalf("%s was told %+v, want one peer-left event for %s, reason kicked", m.ID, got, b.ID)
		}
	}
	if _, err := e.s.Append(t.Context(), store.Post{From: b.Member, Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}}); err == nil {
		t.Fatal("a kicked member posts")
	}
	if n := e.occupants("r"); n != 2 {
		t.Fatalf("%d occupants after a kick, want 2", n)
	}
	if err := e.s.Kick(t.Context(), b.Member); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a second kick of b: %v, want ErrNotFound", err)
	}
	e.leave(b.Member, store.ReasonLeft) // leaving after a kick: no error
	if again := e.joinWith(store.JoinRequest{Room: "r", Token: b.Token}); again.Resumed || again.ID == b.ID {
		t.Fatalf("b's token after its kick joins as %+v, want a new member", again)
	}
	if !e.isMember(a) || !e.isMember(c) {
		t.Fatal("kicking b removed another member")
	}

	s := e.join("s")
	if err := e.s.Kick(t.Context(), s.Member); err != nil {
		t.Fatalf("kick s: %v", err)
	}
	e.wantRefused(s, store.ErrKicked)
	if n := e.occupants("s"); n != 0 {
		t.Fatalf("%d occupants after the only member's kick", n)
	}
	if _, _, err := e.s.Room(t.Context(), "s"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("room s after its only member's kick: %v, want ErrNotFound", err)
	}
}

// CloseRoom deletes a room with its members and messages in one change:
// their readers are told, their tokens and reads answer ErrRoomClosed, and
// the room can be made again, empty. Other rooms are not touched.
func testAppsCloseRoom(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Capacity: 3, MaxRooms: 2})
	a, b := e.join("r"), e.join("r")
	x := e.join("other")
	m := e.post(a.Member, `"type":"unread"`)
	inA, inB := e.subscribe(a.Member), e.subscribe(b.Member)
	if err := e.s.CloseRoom(t.Context(), "r"); err != nil {
		t.Fatalf("close r: %v", err)
	}
	inA.waitFor(t, "of a's removal (upto 0) to a's subscriber", func(upto uint64) bool { return upto == 0 })
	inB.waitFor(t, "of b's removal (upto 0) to b's subscriber", func(upto uint64) bool { return upto == 0 })
	e.wantRefused(a, store.ErrRoomClosed)
	e.wantRefused(b, store.ErrRoomClosed)
	if n := e.occupants("r"); n != 0 {
		t.Fatalf("%d occupants in a closed room", n)
	}
	if _, _, err := e.s.Room(t.Context(), "r"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("room r after CloseRoom: %v, want ErrNotFound", err)
	}
	if list, err := e.s.Rooms(t.Context(), "", 10); err != nil || len(list) != 1 || list[0].Name != "other" {
		t.Fatalf("rooms after r was closed: %+v, %v; want [other]", list, err)
	}
	if !e.isMember(x) {
		t.Fatal("closing r removed a member of another room")
	}

	// Made again: empty, fresh ids; the closed room no longer counts.
	c := e.joinWith(store.JoinRequest{Room: "r", Token: a.Token})
	if c.Resumed || len(c.Peers) != 0 {
		t.Fatalf("the first member of r made again: %+v", c)
	}
	d := e.join("r")
	if msgs := e.read(d.Member, 0); len(msgs) != 0 {
		t.Fatalf("r made again hands its second member %v", ids(msgs))
	}
	msgs := e.read(c.Member, 0)
	if len(msgs) != 1 || msgs[0].ID <= m {
		t.Fatalf("c reads %v, want d's peer-joined event only, above %d", ids(msgs), m)
	}
	e.refuseJoin(store.JoinRequest{Room: "third"}, store.ErrTooManyRooms)
}
