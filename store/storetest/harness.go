package storetest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tincan/tincan/store"
)

// patience is how long the suite waits for something that must happen: a
// notification, the removal of a silent member. A correct engine needs
// milliseconds; the margin is for slow, shared machines.
const patience = 10 * time.Second

// everything is a read limit larger than any test's backlog.
const everything = 10_000

// engine is one test's engine: its backing state, the rules it is opened
// with and the store open on them now. Its helpers end the test on an
// unexpected error; call them from the test's goroutine only.
type engine struct {
	t    testing.TB
	open Opener
	opts store.Options
	s    store.Store // nil while closed
}

// start opens a store on fresh state. Rules the test leaves at zero take
// the engine's defaults, except two that would make an engine act on its
// own in the middle of a test: members are not removed for silence (the
// client timeout is an hour) and the engine does not prune by itself (every
// hour), unless the test asks for it.
func start(t testing.TB, open Opener, opts store.Options) *engine {
	t.Helper()
	if opts.ClientTimeout == 0 {
		opts.ClientTimeout = time.Hour
	}
	if opts.PruneEvery == 0 {
		opts.PruneEvery = time.Hour
	}
	e := &engine{t: t, open: open, opts: opts}
	e.reopen()
	t.Cleanup(func() {
		if e.s != nil {
			e.s.Close()
		}
	})
	return e
}

func (e *engine) reopen() {
	e.t.Helper()
	s, err := e.open(e.opts)
	if err != nil {
		e.t.Fatalf("open: %v", err)
	}
	e.s = s
}

func (e *engine) close() {
	e.t.Helper()
	if err := e.s.Close(); err != nil {
		e.t.Fatalf("close: %v", err)
	}
	e.s = nil
}

// restart closes the store and opens it again on the same state.
func (e *engine) restart() {
	e.t.Helper()
	e.close()
	e.reopen()
}

func (e *engine) join(room string) store.Joined {
	e.t.Helper()
	return e.joinWith(store.JoinRequest{Room: room})
}

func (e *engine) joinWith(req store.JoinRequest) store.Joined {
	e.t.Helper()
	j, err := e.s.Join(e.t.Context(), req)
	if err != nil {
		e.t.Fatalf("join %+v: %v", req, err)
	}
	return j
}

// refuseJoin checks that a join is refused with want.
func (e *engine) refuseJoin(req store.JoinRequest, want error) {
	e.t.Helper()
	j, err := e.s.Join(e.t.Context(), req)
	if !errors.Is(err, want) {
		e.t.Fatalf("join %+v: got %+v, %v; want %v", req, j, err, want)
	}
}

// post appends a broadcast message with the given fields and returns its id.
func (e *engine) post(from store.Member, fields string) uint64 {
	e.t.Helper()
	return e.send(store.Post{From: from, Messages: []store.Draft{{Fields: []byte(fields)}}}).ID
}

func (e *engine) send(p store.Post) store.Appended {
	e.t.Helper()
	a, err := e.s.Append(e.t.Context(), p)
	if err != nil {
		e.t.Fatalf("append %s from %s: %v", describe(p), p.From.ID, err)
	}
	if a.ID == 0 || len(a.IDs) == 0 || !a.Repeat && len(a.IDs) != len(p.Messages) || a.IDs[0] != a.ID {
		e.t.Fatalf("append %s from %s: id %d, ids %v", describe(p), p.From.ID, a.ID, a.IDs)
	}
	for i := 1; i < len(a.IDs); i++ {
		if a.IDs[i] <= a.IDs[i-1] {
			e.t.Fatalf("append %s from %s: ids %v do not increase in the post's order", describe(p), p.From.ID, a.IDs)
		}
	}
	return a
}

// describe is how a failure names a post: its messages' recipients and
// fields.
func describe(p store.Post) string {
	var b strings.Builder
	for i, d := range p.Messages {
		if i > 0 {
			b.WriteString(" + ")
		}
		if d.To != "" {
			fmt.Fprintf(&b, "(to %s) ", d.To)
		}
		b.Write(d.Fields)
	}
	return b.String()
}

// refuseSend checks that an append is refused with want.
func (e *engine) refuseSend(p store.Post, want error) {
	e.t.Helper()
	a, err := e.s.Append(e.t.Context(), p)
	if !errors.Is(err, want) {
		e.t.Fatalf("append %s from %s: got %+v, %v; want %v", describe(p), p.From.ID, a, err, want)
	}
}

// read returns everything for m after the given id, without acknowledging,
// and checks the cursor and that every entry is well formed.
func (e *engine) read(m store.Member, after uint64) []store.Message {
	e.t.Helper()
	msgs, _ := e.readCursor(m, store.ReadRequest{After: after, Limit: everything})
	return msgs
}

// readCursor reads and returns the entries and the cursor, after checking
// that the entries are well formed, oldest first, after the cursor, and no
// more than the limit.
func (e *engine) readCursor(m store.Member, q store.ReadRequest) ([]store.Message, uint64) {
	e.t.Helper()
	msgs, cursor, err := e.s.Read(e.t.Context(), m, q)
	if err != nil {
		e.t.Fatalf("read for %s %+v: %v", m.ID, q, err)
	}
	if cursor < q.After {
		e.t.Fatalf("read for %s %+v: cursor %d is before After", m.ID, q, cursor)
	}
	if len(msgs) > q.Limit {
		e.t.Fatalf("read for %s %+v: %d entries, more than the limit", m.ID, q, len(msgs))
	}
	prev := cursor
	for _, msg := range msgs {
		if msg.ID <= prev {
			e.t.Fatalf("read for %s %+v: entry %d follows %d (cursor %d): %v", m.ID, q, msg.ID, prev, cursor, ids(msgs))
		}
		prev = msg.ID
		parse(e.t, msg)
	}
	return msgs, cursor
}

// ack makes m acknowledge everything up to upto, as a client that sends
// its cursor does.
func (e *engine) ack(m store.Member, upto uint64) {
	e.t.Helper()
	if _, _, err := e.s.Read(e.t.Context(), m, store.ReadRequest{After: upto, Limit: 1, Acknowledge: true}); err != nil {
		e.t.Fatalf("acknowledge %d for %s: %v", upto, m.ID, err)
	}
}

// ackAll makes m acknowledge everything it has been sent so far.
func (e *engine) ackAll(m store.Member) {
	e.t.Helper()
	if msgs := e.read(m, 0); len(msgs) > 0 {
		e.ack(m, msgs[len(msgs)-1].ID)
	}
}

func (e *engine) leave(m store.Member, reason store.Reason) (roomDeleted bool) {
	e.t.Helper()
	deleted, err := e.s.Leave(e.t.Context(), m, reason)
	if err != nil {
		e.t.Fatalf("leave %s: %v", m.ID, err)
	}
	return deleted
}

func (e *engine) prune() int {
	e.t.Helper()
	n, err := e.s.Prune(e.t.Context())
	if err != nil {
		e.t.Fatalf("prune: %v", err)
	}
	return n
}

// wantPrune prunes and checks the number of entries deleted.
func (e *engine) wantPrune(want int, why string) {
	e.t.Helper()
	if n := e.prune(); n != want {
		e.t.Fatalf("prune deleted %d entries, want %d: %s", n, want, why)
	}
}

func (e *engine) occupants(room string) int {
	e.t.Helper()
	n, err := e.s.Occupants(e.t.Context(), room)
	if err != nil {
		e.t.Fatalf("occupants of %s: %v", room, err)
	}
	return n
}

// isMember reports whether token still authenticates m; any other answer
// than m or ErrUnauthorized ends the test.
func (e *engine) isMember(j store.Joined) bool {
	e.t.Helper()
	m, err := e.s.Authenticate(e.t.Context(), j.Token)
	switch {
	case err == nil && m == j.Member:
		return true
	case errors.Is(err, store.ErrUnauthorized):
		return false
	default:
		e.t.Fatalf("authenticate %s: %+v, %v", j.ID, m, err)
		return false
	}
}

// entry is a delivered message as a client parses it.
type entry struct {
	ID      uint64 `json:"id"`
	From    string `json:"from"`
	Type    string `json:"type"`
	Peer    string `json:"peer"`
	Reason  string `json:"reason"`
	Resumed bool   `json:"resumed"`
	// Fields holds every member of the object, as sent.
	Fields map[string]json.RawMessage `json:"-"`
}

// parse decodes a delivered entry and checks its form: a JSON object with
// "id" first, and that id the entry's.
func parse(t testing.TB, msg store.Message) entry {
	t.Helper()
	if prefix := fmt.Sprintf(`{"id":%d,`, msg.ID); !bytes.HasPrefix(msg.Data, []byte(prefix)) {
		t.Fatalf("entry %d reads %s: it must begin with %s", msg.ID, msg.Data, prefix)
	}
	var en entry
	if err := json.Unmarshal(msg.Data, &en); err != nil {
		t.Fatalf("entry %d reads %s: %v", msg.ID, msg.Data, err)
	}
	if err := json.Unmarshal(msg.Data, &en.Fields); err != nil {
		t.Fatalf("entry %d reads %s: %v", msg.ID, msg.Data, err)
	}
	return en
}

// wantEvent checks that msg is a server event of the given type about peer.
func wantEvent(t testing.TB, msg store.Message, typ, peer string) entry {
	t.Helper()
	en := parse(t, msg)
	if en.Type != typ || en.Peer != peer || en.From != "" {
		t.Fatalf("entry %d reads %s, want a %s event about %s", msg.ID, msg.Data, typ, peer)
	}
	return en
}

// wantMessage checks that msg is a message from the given member whose
// fields are (as JSON values) the given ones.
func wantMessage(t testing.TB, msg store.Message, from string, fields string) {
	t.Helper()
	en := parse(t, msg)
	var want map[string]json.RawMessage
	if err := json.Unmarshal([]byte("{"+fields+"}"), &want); err != nil {
		t.Fatalf("the test's fields %s: %v", fields, err)
	}
	want["id"] = json.RawMessage(fmt.Sprint(msg.ID))
	want["from"] = json.RawMessage(fmt.Sprintf("%q", from))
	if len(en.Fields) != len(want) {
		t.Fatalf("entry %d reads %s, want a message from %s with %s", msg.ID, msg.Data, from, fields)
	}
	for k, v := range want {
		if !jsonEqual(en.Fields[k], v) {
			t.Fatalf("entry %d reads %s, want a message from %s with %s", msg.ID, msg.Data, from, fields)
		}
	}
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && fmt.Sprint(x) == fmt.Sprint(y)
}

// ids lists the ids of entries.
func ids(msgs []store.Message) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

// wantIDs checks that msgs are exactly the entries with the given ids.
func wantIDs(t testing.TB, msgs []store.Message, want []uint64, what string) {
	t.Helper()
	if got := ids(msgs); !slices.Equal(got, want) {
		t.Fatalf("%s: got entries %v, want %v", what, got, want)
	}
}

// sameSet reports whether a and b hold the same strings, in any order.
func sameSet(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

// eventually waits up to patience for cond to hold.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not so after %v", what, patience)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// clock is a settable time source, for Options.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// inbox records the calls of one subscription.
type inbox struct {
	calls    chan uint64
	overflow atomic.Bool
	cancel   func()
}

// subscribe subscribes to m's changes; the subscription ends with the test
// at the latest.
func (e *engine) subscribe(m store.Member) *inbox {
	in := &inbox{calls: make(chan uint64, 4096)}
	in.cancel = e.s.Subscribe(m, func(upto uint64) {
		select {
		case in.calls <- upto:
		default:
			in.overflow.Store(true)
		}
	})
	e.t.Cleanup(in.cancel)
	return in
}

// waitFor waits for a call that matches, and returns its upto. Calls before
// it are consumed.
func (in *inbox) waitFor(t testing.TB, what string, match func(upto uint64) bool) uint64 {
	t.Helper()
	timeout := time.After(patience)
	for {
		select {
		case upto := <-in.calls:
			if match(upto) {
				return upto
			}
		case <-timeout:
			t.Fatalf("no notification %s within %v", what, patience)
		}
	}
}

// fastEnough tells whether a check that ends now began soon enough after
// since (within budget) to prove anything: that something has not happened
// yet means nothing when the machine took too long to look. When it did,
// fastEnough logs so, and the test does not fail on that check.
func fastEnough(t testing.TB, since time.Time, budget time.Duration, what string) bool {
	t.Helper()
	if late := time.Since(since); late > budget {
		t.Logf("machine too slow to check %s (took %v, budget %v): check skipped", what, late, budget)
		return false
	}
	return true
}
