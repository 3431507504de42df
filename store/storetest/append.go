package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tincan/tincan/store"
)

// A message without To goes to every other member, as the client sent it
// (with its id first and its sender), and not back to its sender.
func testAppendBroadcast(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Capacity: 3})
	a, b, c := e.join("r"), e.join("r"), e.join("r")
	for _, m := range []store.Member{a.Member, b.Member, c.Member} {
		e.ackAll(m)
	}
	const fields = `"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1","n":[1,{"x":null}]`
	got := e.send(store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(fields)}}})
	if got.Repeat || !sameSet(got.Recipients, []string{b.ID, c.ID}) {
		t.Fatalf("a broadcast: %+v, want recipients %s and %s", got, b.ID, c.ID)
	}
	for _, m := range []store.Member{b.Member, c.Member} {
		msgs := e.read(m, 0)
		wantIDs(t, msgs, []uint64{got.ID}, m.ID+" reads the broadcast")
		wantMessage(t, msgs[0], a.ID, fields)
	}
	if msgs := e.read(a.Member, 0); len(msgs) != 0 {
		t.Fatalf("the sender reads %v: its own message came back", ids(msgs))
	}
}

// A message with To goes to that member only; To must name another
// current member of the room, or nothing is stored.
func testAppendDirect(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Capacity: 3})
	a, b, c := e.join("r"), e.join("r"), e.join("r")
	x := e.join("elsewhere")
	for _, m := range []store.Member{a.Member, b.Member, c.Member} {
		e.ackAll(m)
	}
	got := e.send(store.Post{From: a.Member, Messages: []store.Draft{{To: b.ID, Fields: []byte(`"type":"answer"`)}}})
	if !slices.Equal(got.Recipients, []string{b.ID}) {
		t.Fatalf("a direct message to b went to %v", got.Recipients)
	}
	msgs := e.read(b.Member, 0)
	wantIDs(t, msgs, []uint64{got.ID}, "b reads the direct message")
	wantMessage(t, msgs[0], a.ID, `"type":"answer"`)
	if msgs := e.read(c.Member, 0); len(msgs) != 0 {
		t.Fatalf("c reads %v, a message for b", ids(msgs))
	}
	for _, to := range []string{"nobody", a.ID, x.ID} {
		e.refuseSend(store.Post{From: a.Member, Messages: []store.Draft{{To: to, Fields: []byte(`"type":"x"`)}}}, store.ErrUnknownPeer)
	}
	for _, m := range []store.Member{b.Member, c.Member} {
		if msgs := e.read(m, got.ID); len(msgs) != 0 {
			t.Fatalf("%s reads %v after refused posts", m.ID, ids(msgs))
		}
	}
}

// A broadcast with nobody else in the room is kept for the next member who
// joins, and only for it.
func testAppendKeptForNextJoiner(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Capacity: 3})
	a := e.join("r")
	p1 := e.send(store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(`"type":"offer"`)}}})
	p2 := e.send(store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(`"type":"candidate"`)}}})
	if len(p1.Recipients) != 0 || len(p2.Recipients) != 0 || p1.Repeat || p2.Repeat || p2.ID <= p1.ID {
		t.Fatalf("posts with nobody there: %+v %+v, want no recipients and increasing ids", p1, p2)
	}
	e.refuseSend(store.Post{From: a.Member, Messages: []store.Draft{{To: "later", Fields: []byte(`"type":"x"`)}}}, store.ErrUnknownPeer)
	if msgs := e.read(a.Member, 0); len(msgs) != 0 {
		t.Fatalf("the sender reads %v", ids(msgs))
	}
	b := e.join("r")
	msgs := e.read(b.Member, 0)
	wantIDs(t, msgs, []uint64{p1.ID, p2.ID}, "the next joiner reads what was kept")
	wantMessage(t, msgs[0], a.ID, `"type":"offer"`)
	wantMessage(t, msgs[1], a.ID, `"type":"candidate"`)
	c := e.join("r")
	if msgs := e.read(c.Member, 0); len(msgs) != 0 {
		t.Fatalf("the joiner after next reads %v: the kept messages were b's", ids(msgs))
	}

	// Alone again after the others left: kept again.
	e.leave(b.Member, store.ReasonLeft)
	e.leave(c.Member, store.ReasonLeft)
	p3 := e.post(a.Member, `"type":"again"`)
	d := e.join("r")
	wantIDs(t, e.read(d.Member, 0), []uint64{p3}, "the next joiner after the others left")
}

// An idempotency key repeated by the same sender in the same room gets the
// first post's id and stores nothing, also when the repeats race and after
// the message was delivered and pruned; another sender's key is its own.
func testAppendIdempotency(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Capacity: 3})
	a, b, c := e.join("r"), e.join("r"), e.join("r")
	for _, m := range []store.Member{a.Member, b.Member, c.Member} {
		e.ackAll(m)
	}
	keyed := func(from store.Member, key, fields string) store.Appended {
		t.Helper()
		return e.send(store.Post{From: from, IdempotencyKey: key, Messages: []store.Draft{{Fields: []byte(fields)}}})
	}
	first := keyed(a.Member, "k", `"type":"first"`)
	if first.Repeat || !sameSet(first.Recipients, []string{b.ID, c.ID}) {
		t.Fatalf("first post with a key: %+v", first)
	}
	again := keyed(a.Member, "k", `"type":"retry"`)
	if !again.Repeat || again.ID != first.ID || len(again.Recipients) != 0 {
		t.Fatalf("repeated key: %+v, want id %d, Repeat, no recipients", again, first.ID)
	}
	msgs := e.read(b.Member, 0)
	wantIDs(t, msgs, []uint64{first.ID}, "b reads a post sent twice with one key")
	wantMessage(t, msgs[0], a.ID, `"type":"first"`)

	other := keyed(b.Member, "k", `"type":"b's own"`)
	if other.Repeat || other.ID == first.ID {
		t.Fatalf("another sender's post with the same key: %+v, want a new message", other)
	}
	if k2 := keyed(a.Member, "k2", `"type":"x"`); k2.Repeat || k2.ID == first.ID {
		t.Fatalf("another key: %+v, want a new message", k2)
	}
	if n1, n2 := keyed(a.Member, "", `"type":"x"`), keyed(a.Member, "", `"type":"x"`); n1.Repeat || n2.Repeat || n1.ID == n2.ID {
		t.Fatalf("two posts without a key: %+v %+v, want two messages", n1, n2)
	}

	// Racing repeats: one post stored, every caller told its id.
	e.ackAll(b.Member)
	var wg sync.WaitGroup
	results := make([]store.Appended, 20)
	errs := make([]error, len(results))
	for i := range results {
		wg.Go(func() {
			results[i], errs[i] = e.s.Append(t.Context(), store.Post{From: a.Member, IdempotencyKey: "burst", Messages: []store.Draft{{Fields: []byte(fmt.Sprintf(`"type":"burst","try":%d`, i))}}})
		})
	}
	wg.Wait()
	firsts := 0
	for i, r := range results {
		if errs[i] != nil || r.ID != results[0].ID {
			t.Fatalf("racing repeats of one key: %+v, %v; first answer %+v", r, errs[i], results[0])
		}
		if !r.Repeat {
			firsts++
		}
	}
	if firsts != 1 {
		t.Fatalf("%d of %d racing posts with one key were not repeats, want 1", firsts, len(results))
	}
	wantIDs(t, e.read(b.Member, 0), []uint64{results[0].ID}, "b reads racing repeats")

	// Delivered, acknowledged and pruned: a late retry is still a repeat.
	for _, m := range []store.Member{a.Member, b.Member, c.Member} {
		e.ackAll(m)
	}
	e.prune()
	if late := keyed(a.Member, "k", `"type":"late retry"`); !late.Repeat || late.ID != first.ID {
		t.Fatalf("a retry after its message was pruned: %+v, want id %d, Repeat", late, first.ID)
	}
	if msgs := e.read(b.Member, 0); len(msgs) != 0 {
		t.Fatalf("b reads %v after a late retry", ids(msgs))
	}
}

// Concurrent posts all succeed with distinct ids, and the recipient reads
// each of them once, in id order.
func testAppendConcurrent(t testing.TB, open Opener) {
	e := start(t, open, store.Options{})
	a, b := e.join("r"), e.join("r")
	e.ackAll(a.Member)
	const n = 200
	var wg sync.WaitGroup
	got := make([]uint64, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			var r store.Appended
			r, errs[i] = e.s.Append(t.Context(), store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(fmt.Sprintf(`"type":"x","i":%d`, i))}}})
			got[i] = r.ID
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent post %d: %v", i, err)
		}
	}
	slices.Sort(got)
	if len(slices.Compact(slices.Clone(got))) != n {
		t.Fatalf("%d concurrent posts got repeated ids: %v", n, got)
	}
	// Read in pages, as a reader would.
	var read []uint64
	for after := uint64(0); ; {
		msgs, _ := e.readCursor(b.Member, store.ReadRequest{After: after, Limit: 16})
		if len(msgs) == 0 {
			break
		}
		read = append(read, ids(msgs)...)
		after = msgs[len(msgs)-1].ID
	}
	if !slices.Equal(read, got) {
		t.Fatalf("b reads %d entries %v,\nwant the %d posts %v", len(read), read, n, got)
	}
}

// A room holds at most MaxRoomMessages entries (server events count); a
// post beyond is refused and stores nothing, a repeat of a stored key is
// still answered, and pruning makes room again.
func testAppendTooManyMessages(t testing.TB, open Opener) {
	const limit = 5
	e := start(t, open, store.Options{MaxRoomMessages: limit})
	a, b := e.join("r") /* the peer-joined event for a is the first entry */, e.join("r")
	keyed := e.send(store.Post{From: a.Member, IdempotencyKey: "k", Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}}).ID
	for range limit - 2 {
		e.post(a.Member, `"type":"x"`)
	}
	e.refuseSend(store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(`"type":"one too many"`)}}}, store.ErrTooManyMessages)
	e.refuseSend(store.Post{From: b.Member, Messages: []store.Draft{{Fields: []byte(`"type":"one too many"`)}}}, store.ErrTooManyMessages)
	if msgs := e.read(b.Member, 0); len(msgs) != limit-1 {
		t.Fatalf("b reads %d messages, want the %d stored before the refusals", len(msgs), limit-1)
	}
	if r, err := e.s.Append(t.Context(), store.Post{From: a.Member, IdempotencyKey: "k", Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}}); err != nil || !r.Repeat || r.ID != keyed {
		t.Fatalf("a repeat in a full room: %+v, %v; want id %d, Repeat", r, err, keyed)
	}
	e.ackAll(a.Member)
	e.ackAll(b.Member)
	e.wantPrune(limit, "every entry was acknowledged")
	e.post(a.Member, `"type":"room again"`)
}

// The room message limit counts what someone will still receive: once the
// readers have acknowledged what they were sent, posts are taken again at
// once, before any prune.
func testAppendLimitCountsRetainedOnly(t testing.TB, open Opener) {
	const limit = 4
	e := start(t, open, store.Options{MaxRoomMessages: limit})
	a, b := e.join("r") /* a's peer-joined event is the first entry */, e.join("r")
	for range limit - 1 {
		e.post(a.Member, `"type":"x"`)
	}
	e.refuseSend(store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(`"type":"one too many"`)}}}, store.ErrTooManyMessages)
	e.ackAll(b.Member) // b holds a's messages; a has not acknowledged its event
	var again []uint64
	for range limit - 1 {
		again = append(again, e.post(a.Member, `"type":"again"`))
	}
	e.refuseSend(store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(`"type":"one too many"`)}}}, store.ErrTooManyMessages)
	wantIDs(t, e.read(b.Member, 0), again, "b's messages after its acknowledgement")
}

// batch is a post of the given drafts from from.
func batch(from store.Member, key string, drafts ...store.Draft) store.Post {
	return store.Post{From: from, IdempotencyKey: key, Messages: drafts}
}

func draft(to, fields string) store.Draft { return store.Draft{To: to, Fields: []byte(fields)} }

// A post of several messages stores them in one go, with ids increasing
// in its order, each delivered as its own message to its own recipients,
// exactly as if posted one by one.
func testAppendBatch(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Capacity: 3})
	a, b, c := e.join("r"), e.join("r"), e.join("r")
	mark := e.post(a.Member, `"type":"mark"`)
	got := e.send(batch(a.Member, "", draft("", `"type":"candidate","candidate":"1"`), draft(b.ID, `"type":"candidate","candidate":"2"`),
		draft("", `"type":"candidate","candidate":null`)))
	if got.Repeat || len(got.IDs) != 3 || !sameSet(got.Recipients, []string{b.ID, c.ID}) {
		t.Fatalf("a batch of 3: %+v", got)
	}
	forB := e.read(b.Member, mark)
	wantIDs(t, forB, got.IDs, "b's messages of the batch")
	for i, want := range []string{`"type":"candidate","candidate":"1"`, `"type":"candidate","candidate":"2"`, `"type":"candidate","candidate":null`} {
		wantMessage(t, forB[i], a.ID, want)
	}
	wantIDs(t, e.read(c.Member, mark), []uint64{got.IDs[0], got.IDs[2]}, "c's messages of the batch (the second was to b)")
	next := e.post(a.Member, `"type":"after"`)
	if next <= got.IDs[2] {
		t.Fatalf("a post after the batch has id %d, not above the batch's %v", next, got.IDs)
	}
	every := make([]store.Draft, store.MaxPost)
	for i := range every {
		every[i] = draft("", fmt.Sprintf(`"type":"x","i":%d`, i))
	}
	full := e.send(batch(a.Member, "", every...)) // send checks MaxPost ids, increasing
	wantIDs(t, e.read(c.Member, next), full.IDs, "c's messages of a post of MaxPost")
}

// A post is all or nothing: one message addressed to nobody, or one too
// many for the room's limit, refuses the whole post, which leaves no
// trace; an empty post and one over MaxPost are refused as such.
func testAppendBatchAllOrNothing(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Capacity: 3, MaxRoomMessages: 6})
	a, b := e.join("r"), e.join("r") // a's peer-joined event is one entry
	_, err := e.s.Append(t.Context(), batch(a.Member, "k", draft("", `"type":"x"`), draft("", `"type":"y"`), draft("nobody", `"type":"z"`)))
	if !errors.Is(err, store.ErrUnknownPeer) || !strings.Contains(err.Error(), "message 2") {
		t.Fatalf("a batch whose third message is to nobody: %v; want ErrUnknownPeer naming message 2", err)
	}
	e.refuseSend(batch(a.Member, "", draft("", `"type":"x"`), draft("", `"type":"y"`), draft("", `"type":"z"`),
		draft("", `"type":"one too many"`), draft("", `"type":"two too many"`), draft("", `"type":"three"`)), store.ErrTooManyMessages)
	e.refuseSend(batch(a.Member, ""), store.ErrBadPost)
	over := make([]store.Draft, store.MaxPost+1)
	for i := range over {
		over[i] = draft("", `"type":"x"`)
	}
	e.refuseSend(batch(a.Member, "", over...), store.ErrBadPost)
	if msgs := e.read(b.Member, 0); len(msgs) != 0 {
		t.Fatalf("refused posts left %v for b", ids(msgs))
	}
	// The key of the refused post is free: the post made right is stored.
	ok := e.send(batch(a.Member, "k", draft("", `"type":"x"`), draft("", `"type":"y"`)))
	wantIDs(t, e.read(b.Member, 0), ok.IDs, "the post made right")
}

// An idempotency key covers the whole post: the retry gets every id of
// the first, stores nothing, and nothing is delivered twice.
func testAppendBatchIdempotent(t testing.TB, open Opener) {
	e := start(t, open, store.Options{})
	a, b := e.join("r"), e.join("r")
	p := batch(a.Member, "burst", draft("", `"type":"candidate","candidate":"1"`), draft("", `"type":"candidate","candidate":"2"`))
	first := e.send(p)
	again := e.send(p)
	if !again.Repeat || !slices.Equal(again.IDs, first.IDs) || again.ID != first.ID {
		t.Fatalf("the retry of a batch: %+v; want Repeat with ids %v", again, first.IDs)
	}
	// A retry answers the first post's ids whatever it carries: more
	// messages, or one; after a restart too.
	e.restart()
	for _, other := range []store.Post{
		batch(a.Member, "burst", draft("", `"type":"x"`), draft("", `"type":"y"`), draft("", `"type":"z"`)),
		batch(a.Member, "burst", draft("", `"type":"x"`)),
	} {
		if r := e.send(other); !r.Repeat || !slices.Equal(r.IDs, first.IDs) {
			t.Fatalf("a retry of key burst with %d messages: %+v; want Repeat with ids %v", len(other.Messages), r, first.IDs)
		}
	}
	wantIDs(t, e.read(b.Member, 0), first.IDs, "b's messages after a retried batch")
}

// A batch posted with nobody else in the room is kept for the next joiner,
// every message of it, as if posted alone.
func testAppendBatchKeptForNextJoiner(t testing.TB, open Opener) {
	e := start(t, open, store.Options{})
	a := e.join("r")
	got := e.send(batch(a.Member, "", draft("", `"type":"offer","sdp":"v=0"`), draft("", `"type":"candidate","candidate":"1"`)))
	if len(got.Recipients) != 0 {
		t.Fatalf("a batch in an empty room went to %v", got.Recipients)
	}
	b := e.join("r")
	wantIDs(t, e.read(b.Member, 0), got.IDs, "the joiner's kept batch")
}

// A post from store.ServerID needs no membership, only the room: to
// everyone or to one member, its entries read "from":"server". A room that
// does not exist is ErrNotFound; a To that is no member, ErrUnknownPeer.
func testAppendFromServer(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Capacity: 3})
	a, b := e.join("r"), e.join("r")
	e.ackAll(a.Member)
	server := store.Member{Room: "r", ID: store.ServerID}
	all := e.send(store.Post{From: server, Messages: []store.Draft{{Fields: []byte(`"type":"notice","text":"hi"`)}}})
	if all.Repeat || !sameSet(all.Recipients, []string{a.ID, b.ID}) {
		t.Fatalf("a post from the server to everyone: %+v, want recipients %s and %s", all, a.ID, b.ID)
	}
	one := e.send(store.Post{From: server, Messages: []store.Draft{{To: b.ID, Fields: []byte(`"type":"notice","text":"b only"`)}}})
	if !sameSet(one.Recipients, []string{b.ID}) {
		t.Fatalf("a post from the server to b: %+v, want recipient %s", one, b.ID)
	}
	forA := e.read(a.Member, 0)
	wantIDs(t, forA, []uint64{all.ID}, "a, after the server's posts")
	wantMessage(t, forA[0], store.ServerID, `"type":"notice","text":"hi"`)
	forB := e.read(b.Member, 0)
	wantIDs(t, forB, []uint64{all.ID, one.ID}, "b, after the server's posts")
	wantMessage(t, forB[1], store.ServerID, `"type":"notice","text":"b only"`)

	e.refuseSend(store.Post{From: store.Member{Room: "nowhere", ID: store.ServerID}, Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}}, store.ErrNotFound)
	e.refuseSend(store.Post{From: server, Messages: []store.Draft{{To: "ghost", Fields: []byte(`"type":"x"`)}}}, store.ErrUnknownPeer)
	if next := e.post(a.Member, `"type":"after"`); next <= one.ID {
		t.Fatalf("a member's post after the server's has id %d, not above %d", next, one.ID)
	}
}
