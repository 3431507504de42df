package storetest

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tincan/tincan/store"
)

// Every new entry for a member, message or event, is announced to its
// subscribers, and is visible to Read when the announcement comes. The
// suite takes an upto at least the entry's id as its announcement, so that
// an engine may announce several entries in one call.
func testSubscribeEachChange(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Capacity: 3})
	a, b := e.join("r"), e.join("r")
	e.ackAll(b.Member)
	in := e.subscribe(b.Member)
	var after uint64
	// announced waits for an announcement that covers id (or, with id 0,
	// any new entry) and checks that Read shows the entry by then.
	announced := func(id uint64, what string) {
		t.Helper()
		upto := in.waitFor(t, "of "+what, func(upto uint64) bool { return upto > after && upto >= id })
		msgs := e.read(b.Member, after)
		if len(msgs) == 0 || msgs[len(msgs)-1].ID < max(id, upto) {
			t.Fatalf("notified of %s (upto %d), but b then reads %v after %d", what, upto, ids(msgs), after)
		}
		after = msgs[len(msgs)-1].ID
	}
	for i := range 6 {
		announced(e.post(a.Member, fmt.Sprintf(`"type":"x","i":%d`, i)), fmt.Sprint("broadcast ", i))
	}
	announced(e.send(store.Post{From: a.Member, Messages: []store.Draft{{To: b.ID, Fields: []byte(`"type":"direct"`)}}}).ID, "a direct message")
	c := e.join("r")
	announced(0, "c's peer-joined event")
	announced(e.post(c.Member, `"type":"from c"`), "c's message")
	e.leave(c.Member, store.ReasonLeft)
	announced(0, "c's peer-left event")
	e.joinWith(store.JoinRequest{Room: "r", Token: a.Token})
	announced(0, "a's resume")
	if in.overflow.Load() {
		t.Fatal("more than 4096 notifications for a dozen changes")
	}
}

// Readers that do what the handlers do (subscribe, read, wait for a
// notification, read again) get every entry exactly once while several
// writers post at once.
func testSubscribeNoGapsNoDuplicates(t testing.TB, open Opener) {
	e := start(t, open, store.Options{Capacity: 3})
	a, b, c := e.join("r"), e.join("r"), e.join("r")
	for _, m := range []store.Member{a.Member, b.Member, c.Member} {
		e.ackAll(m)
	}
	const writers, perWriter = 4, 50

	// follow reads m's entries as a live reader does until it has want of
	// them; ack makes it acknowledge its cursor with every read, as a
	// long-poll does.
	follow := func(m store.Member, ack bool, want int, subscribed *sync.WaitGroup) ([]uint64, error) {
		woken := make(chan struct{}, 1)
		cancel := e.s.Subscribe(m, func(uint64) {
			select {
			case woken <- struct{}{}:
			default: // a wake-up is pending already
			}
		})
		defer cancel()
		subscribed.Done()
		var got []uint64
		var after uint64
		for len(got) < want {
			msgs, _, err := e.s.Read(t.Context(), m, store.ReadRequest{After: after, Limit: 16, Acknowledge: ack})
			if err != nil {
				return got, err
			}
			for _, msg := range msgs {
				if msg.ID <= after {
					return got, fmt.Errorf("entry %d read after %d: delivered twice or out of order", msg.ID, after)
				}
				got = append(got, msg.ID)
				after = msg.ID
			}
			if len(msgs) > 0 {
				continue
			}
			select {
			case <-woken:
			case <-time.After(patience):
				return got, fmt.Errorf("stalled with %d of %d entries: no notification for %v", len(got), want, patience)
			}
		}
		return got, nil
	}

	var subscribed, readers sync.WaitGroup
	var gotB, gotA []uint64
	var errB, errA error
	subscribed.Add(2)
	readers.Go(func() { gotB, errB = follow(b.Member, true, writers*perWriter, &subscribed) })
	readers.Go(func() { gotA, errA = follow(a.Member, false, writers/2*perWriter, &subscribed) })
	subscribed.Wait()

	var mu sync.Mutex
	var fromA, fromC []uint64
	var posting sync.WaitGroup
	for w := range writers {
		from, sent := a.Member, &fromA
		if w%2 == 1 {
			from, sent = c.Member, &fromC
		}
		posting.Go(func() {
			for i := range perWriter {
				r, err := e.s.Append(t.Context(), store.Post{From: from, Messages: []store.Draft{{Fields: []byte(fmt.Sprintf(`"type":"x","w":%d,"i":%d`, w, i))}}})
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				mu.Lock()
				*sent = append(*sent, r.ID)
				mu.Unlock()
			}
		})
	}
	posting.Wait()
	readers.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if errB != nil || errA != nil {
		t.Fatalf("live readers: b: %v; a: %v", errB, errA)
	}
	slices.Sort(fromA)
	slices.Sort(fromC)
	if all := slices.Sorted(slices.Values(append(slices.Clone(fromA), fromC...))); !slices.Equal(gotB, all) {
		t.Fatalf("b's live reader got %d entries, want the %d posts of a and c:\ngot  %v\nwant %v", len(gotB), len(all), gotB, all)
	}
	if !slices.Equal(gotA, fromC) {
		t.Fatalf("a's live reader got %d entries, want c's %d posts:\ngot  %v\nwant %v", len(gotA), len(fromC), gotA, fromC)
	}
	// Nothing more than what was posted.
	if msgs := e.read(b.Member, gotB[len(gotB)-1]); len(msgs) != 0 {
		t.Fatalf("b has %v more to read", ids(msgs))
	}
}

// A member's removal is announced to its subscribers with upto 0; a Read
// then refuses it. Its peers are told as of any new entry.
func testSubscribeRemoval(t testing.TB, open Opener) {
	e := start(t, open, store.Options{})
	a, b := e.join("r"), e.join("r")
	e.ackAll(a.Member)
	inA, inB := e.subscribe(a.Member), e.subscribe(b.Member)
	e.leave(b.Member, store.ReasonLeft)
	inB.waitFor(t, "of b's removal (upto 0) to b's subscriber", func(upto uint64) bool { return upto == 0 })
	if _, _, err := e.s.Read(t.Context(), b.Member, store.ReadRequest{Limit: 10}); err == nil {
		t.Fatal("b's subscriber was told of its removal, but b still reads")
	}
	inA.waitFor(t, "of b's peer-left event to a's subscriber", func(upto uint64) bool { return upto > 0 })
}

// Every subscription of a member is called; cancel ends one subscription
// and no call comes after it returns, also with posts in flight.
func testSubscribeCancel(t testing.TB, open Opener) {
	e := start(t, open, store.Options{})
	a, b := e.join("r"), e.join("r")
	first, second := e.subscribe(b.Member), e.subscribe(b.Member)
	id := e.post(a.Member, `"type":"x"`)
	first.waitFor(t, "of a post to the first subscription", func(upto uint64) bool { return upto >= id })
	second.waitFor(t, "of a post to the second subscription", func(upto uint64) bool { return upto >= id })
	first.cancel()
	for range 3 {
		id = e.post(a.Member, `"type":"x"`)
	}
	second.waitFor(t, "of later posts to the subscription that goes on", func(upto uint64) bool { return upto >= id })
	time.Sleep(50 * time.Millisecond) // a call to the cancelled one would be as late as this at most
	select {
	case upto := <-first.calls:
		t.Fatalf("a cancelled subscription was called (upto %d)", upto)
	default:
	}

	// Cancel while a writer posts: no call once cancel has returned.
	var cancelled atomic.Bool
	var late atomic.Int64
	cancel := e.s.Subscribe(b.Member, func(uint64) {
		if cancelled.Load() {
			late.Add(1)
		}
	})
	tenth := make(chan struct{})
	tenthDone := sync.OnceFunc(func() { close(tenth) })
	var writer sync.WaitGroup
	writer.Go(func() {
		defer tenthDone() // also when a post fails early
		for i := range 100 {
			if _, err := e.s.Append(t.Context(), store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}}); err != nil {
				t.Errorf("append: %v", err)
				return
			}
			if i == 9 {
				tenthDone()
			}
		}
	})
	<-tenth
	cancel()
	cancelled.Store(true)
	writer.Wait()
	if n := late.Load(); n > 0 {
		t.Fatalf("%d calls after cancel returned", n)
	}
}
