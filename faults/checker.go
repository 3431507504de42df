// Package faults is tincan's fault suite, in the spirit of etcd's
// robustness tests: three etcd members as separate processes, three tincan
// binaries on them behind a round-robin balancer, clients that post, read,
// join, leave and fall silent through it while one fault strikes (a
// SIGKILL, a SIGSTOP, a blackholed link, a leader transfer, compaction,
// defragmentation), every client call and what it saw recorded with
// monotonic times in a History, and one checker, Check, that judges the
// History against what tincan promises. See fault_test.go for the runs and
// docs/development.md for how to run them many times.
package faults

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Outcome is how a call ended, as the client knows it.
type Outcome int

const (
	// OK: the server answered success (201, 204).
	OK Outcome = iota
	// Refused: the server answered a 4xx; it did nothing.
	Refused
	// Unknown: no answer the client could trust (a network failure, a
	// 5xx after every retry, a timeout): the call may or may not have
	// happened.
	Unknown
)

func (o Outcome) String() string { return [...]string{"ok", "refused", "unknown"}[o] }

// Post is one Member.Send: a message of type "load" carrying its
// Idempotency-Key as "k". Start and End are the call's, since the run
// began (monotonic), retries included.
type Post struct {
	Room, Sender, Key string
	Start, End        time.Duration
	Outcome           Outcome
	Code              string // the refusal's problem code
	ID                uint64 // the id answered, when OK
}

// Delivery is a message a reader's Receive yielded.
type Delivery struct {
	Room, Reader string
	ID           uint64
	Type, From   string
	Key          string // "k" of a load message
	Peer, Reason string // of peer-joined, peer-left
	At           time.Duration
}

// Stale is a message the client dropped as a repeat (ID == Cursor) or out
// of order (ID < Cursor): the server sent it, which it promises not to.
type Stale struct {
	Room, Reader string
	ID, Cursor   uint64
	At           time.Duration
}

// Join is one Client.Join.
type Join struct {
	Room       string
	ClientID   string // when OK
	Start, End time.Duration
	Outcome    Outcome
	Code       string
	// Occupants is the room's size after the join as its answer says it
	// (its peers and itself); Capacity what the answer says it admits.
	Occupants, Capacity int
	// Silent: the member never listens nor leaves, so the server must
	// remove it at its client timeout.
	Silent bool
	// ResumeOf is the member whose token the join carried: the answer
	// must be that member (resumed), not a new one.
	ResumeOf string
}

// FailedJoin is one try of a join that the server or the balancer
// answered 5xx, or that got no answer; the client retries a join after
// 429 and 503 (answers that promise it did nothing).
type FailedJoin struct {
	Room   string
	Status int // 0: no answer
	At     time.Duration
}

// Leave is one leave. Outcome OK: answered 204, the member left by it;
// Refused: answered 401 at the first try, the member was gone before
// (removed at its timeout); Unknown: no answer, or a 401 after a try
// without one.
type Leave struct {
	Room, ClientID string
	Start, End     time.Duration
	Outcome        Outcome
}

// Webhook is the first arrival of one webhook-id at the receiver.
type Webhook struct {
	ID, Type, Room, ClientID, Reason string
	Seq                              uint64
	At                               time.Duration
}

// Reader is a member that receives from before the traffic began until
// the run's end message (Drained), or until Receive ended with Err.
type Reader struct {
	Room, ClientID string
	Joined         time.Duration // its join's answer
	Drained        bool
	Err            string
	Ended          time.Duration // when its Receive ended, drained or not
}

// Retained is a room's message count at one moment as a member that
// acknowledged nothing read it: every entry still retained.
type Retained struct {
	Room  string
	Count int
	At    time.Duration
}

// History is what the clients of one run did and saw. Its methods record
// concurrently; Check reads it once the run is over.
type History struct {
	// Capacity and MaxRoomMessages are the servers' -room-capacity and
	// -max-room-messages; ClientTimeout their -client-timeout.
	Capacity, MaxRoomMessages int
	ClientTimeout             time.Duration
	// FaultFrom and FaultTo are when the fault struck and when it was
	// over (a process restarted, a cut healed); zero when unknown.
	FaultFrom, FaultTo time.Duration

	began time.Time
	mu    sync.Mutex

	Posts       []Post
	Deliveries  []Delivery
	Stale       []Stale
	Joins       []Join
	Leaves      []Leave
	Webhooks    []Webhook
	Readers     []Reader
	Retained    []Retained
	FailedJoins []FailedJoin
}

// NewHistory begins a history now.
func NewHistory(capacity, maxRoomMessages int, clientTimeout time.Duration) *History {
	return &History{Capacity: capacity, MaxRoomMessages: maxRoomMessages, ClientTimeout: clientTimeout, began: time.Now()}
}

// Now is the time since the history began, on the monotonic clock.
func (h *History) Now() time.Duration { return time.Since(h.began) }

func record[T any](h *History, list *[]T, v T) {
	h.mu.Lock()
	*list = append(*list, v)
	h.mu.Unlock()
}

func (h *History) AddPost(p Post)             { record(h, &h.Posts, p) }
func (h *History) AddDelivery(d Delivery)     { record(h, &h.Deliveries, d) }
func (h *History) AddStale(s Stale)           { record(h, &h.Stale, s) }
func (h *History) AddJoin(j Join)             { record(h, &h.Joins, j) }
func (h *History) AddLeave(l Leave)           { record(h, &h.Leaves, l) }
func (h *History) AddWebhook(w Webhook)       { record(h, &h.Webhooks, w) }
func (h *History) AddReader(r Reader)         { record(h, &h.Readers, r) }
func (h *History) AddRetained(r Retained)     { record(h, &h.Retained, r) }
func (h *History) AddFailedJoin(f FailedJoin) { record(h, &h.FailedJoins, f) }

// Violation is one broken promise found in a history.
type Violation struct {
	Kind   string // "lost", "duplicated", "order", "invented", "ids", "capacity", "max-room-messages", "peer-left", "ghost", "resume", "webhook", "reader"
	Detail string
}

func (v Violation) String() string { return v.Kind + ": " + v.Detail }

// Figures are a run's numbers.
type Figures struct {
	Acked      int // posts answered 201
	Delivered  int // load messages the readers received
	Lost       int // acknowledged posts some reader never received
	Duplicated int // messages delivered twice to a reader, or stored twice
	Violations int // every violation, the two above included
	// WatchStall is the longest a reader waited for a committed message:
	// from the moment it was known committed (its 201, or its first
	// delivery to anyone, whichever came first) to its delivery.
	WatchStall time.Duration
	// P99Post is the 99th percentile of the posts' times to 201 (the
	// client's retries included).
	P99Post time.Duration
	// MaxPost is the slowest post's (few posts are in flight when a
	// fault strikes: p99 may not show them).
	MaxPost time.Duration
	// P99Fault is the 99th percentile of the posts begun while the
	// fault lasted (P99Post when the history does not say when).
	P99Fault time.Duration
	// Joins, Departures and Webhooks count what the run did.
	Joins, Refused, Unknown, Departures, Webhooks int
}

func (f Figures) String() string {
	return fmt.Sprintf("acked %d, lost %d, duplicated %d, violations %d, watch stall %v, p99 POST %v (during the fault %v, max %v; delivered %d, joins %d ok / %d refused / %d unknown, departures %d, webhooks %d)",
		f.Acked, f.Lost, f.Duplicated, f.Violations, f.WatchStall.Round(time.Millisecond), f.P99Post.Round(time.Millisecond),
		f.P99Fault.Round(time.Millisecond), f.MaxPost.Round(time.Millisecond), f.Delivered, f.Joins, f.Refused, f.Unknown, f.Departures, f.Webhooks)
}

// Check judges a finished history: every acknowledged message delivered
// exactly once to each reader of its room, in id order, with its answered
// id; nothing delivered that was not posted; ids increasing within a room
// in real time; capacity and MaxRoomMessages never exceeded; exactly one
// peer-left per departure and none for a member still there; every
// membership change's webhook delivered at least once, in room order, and
// none for a join that did not happen. It returns the violations found
// (empty: none) and the figures.
func Check(h *History) ([]Violation, Figures) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := &checker{h: h}
	c.messages()
	c.ids()
	c.capacity()
	c.retention()
	c.presence()
	c.webhooks()
	c.figures.Violations = len(c.violations)
	return c.violations, c.figures
}

type checker struct {
	h          *History
	violations []Violation
	figures    Figures
}

func (c *checker) fail(kind, format string, args ...any) {
	c.violations = append(c.violations, Violation{kind, fmt.Sprintf(format, args...)})
}

type readerKey struct{ room, reader string }

// messages: exactly once, in order, nothing invented; lost, duplicated,
// watch stall and p99 POST.
func (c *checker) messages() {
	h := c.h
	// The posts by room and key (a key is unique within a run).
	posts := map[string]*Post{} // room/key
	var acked []*Post
	var took, during []time.Duration
	for i := range h.Posts {
		p := &h.Posts[i]
		k := p.Room + "/" + p.Key
		if o, dup := posts[k]; dup {
			c.fail("duplicated", "key %s posted twice in %s (ids %d, %d): the test's keys must be unique", p.Key, p.Room, o.ID, p.ID)
		}
		posts[k] = p
		if p.Outcome == OK {
			acked = append(acked, p)
			took = append(took, p.End-p.Start)
			if h.FaultTo == 0 || p.Start >= h.FaultFrom && p.Start <= h.FaultTo {
				during = append(during, p.End-p.Start)
			}
		}
	}
	c.figures.Acked = len(acked)
	c.figures.P99Post, c.figures.MaxPost = percentile(took, 99), percentile(took, 100)
	c.figures.P99Fault = percentile(during, 99)

	// Each reader's deliveries in the order it got them.
	byReader := map[readerKey][]Delivery{}
	firstSeen := map[string]time.Duration{} // room/key -> first delivery anywhere
	storedAs := map[string]uint64{}         // room/key -> the id it was delivered with
	for _, d := range h.Deliveries {
		rk := readerKey{d.Room, d.Reader}
		byReader[rk] = append(byReader[rk], d)
		if d.Type != "load" {
			continue
		}
		c.figures.Delivered++
		k := d.Room + "/" + d.Key
		p := posts[k]
		switch {
		case p == nil || p.Sender != d.From:
			c.fail("invented", "reader %s in %s got id %d, key %q from %s, which nobody posted", d.Reader, d.Room, d.ID, d.Key, d.From)
			continue
		case p.Outcome == OK && d.ID != p.ID:
			c.fail("duplicated", "key %s in %s was answered id %d but delivered as id %d (stored twice?)", d.Key, d.Room, p.ID, d.ID)
			c.figures.Duplicated++
		case p.Outcome == Refused:
			c.fail("invented", "key %s in %s was refused (%s) but delivered as id %d", d.Key, d.Room, p.Code, d.ID)
		}
		if id, ok := storedAs[k]; ok && id != d.ID {
			c.fail("duplicated", "key %s in %s delivered as ids %d and %d", d.Key, d.Room, id, d.ID)
			c.figures.Duplicated++
		}
		storedAs[k] = d.ID
		if t, ok := firstSeen[k]; !ok || d.At < t {
			firstSeen[k] = d.At
		}
	}
	for _, s := range h.Stale {
		if s.ID == s.Cursor {
			c.fail("duplicated", "reader %s in %s was sent id %d again", s.Reader, s.Room, s.ID)
			c.figures.Duplicated++
		} else {
			c.fail("order", "reader %s in %s was sent id %d after id %d", s.Reader, s.Room, s.ID, s.Cursor)
		}
	}

	lost := map[*Post]bool{}
	for _, r := range h.Readers {
		rk := readerKey{r.Room, r.ClientID}
		got := map[uint64]Delivery{}
		var last uint64
		for _, d := range byReader[rk] {
			if _, dup := got[d.ID]; dup {
				c.fail("duplicated", "reader %s in %s got id %d twice", r.ClientID, r.Room, d.ID)
				c.figures.Duplicated++
			} else if d.ID < last {
				c.fail("order", "reader %s in %s got id %d after id %d", r.ClientID, r.Room, d.ID, last)
			}
			got[d.ID] = d
			last = max(last, d.ID)
		}
		if !r.Drained {
			c.fail("reader", "reader %s in %s did not reach the end of the run: %s", r.ClientID, r.Room, cmp.Or(r.Err, "no end message"))
		}
		for _, p := range acked {
			if p.Room != r.Room || p.Sender == r.ClientID || p.Start < r.Joined {
				continue
			}
			if !r.Drained && p.Start > r.Ended {
				continue // posted after the reader was refused: a "reader" violation, not a loss
			}
			d, ok := got[p.ID]
			if !ok || d.Key != p.Key {
				if !lost[p] {
					c.fail("lost", "key %s in %s, answered id %d at %v, never reached reader %s", p.Key, p.Room, p.ID, p.End, r.ClientID)
				}
				lost[p] = true
				continue
			}
			committed := p.End
			if t, ok := firstSeen[p.Room+"/"+p.Key]; ok && t < committed {
				committed = t
			}
			c.figures.WatchStall = max(c.figures.WatchStall, d.At-committed)
		}
	}
	c.figures.Lost = len(lost)
}

// percentile is the p-th percentile of ds (nearest rank; it sorts ds),
// 0 for none.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[(len(ds)*p+99)/100-1]
}

// ids: within a room, a post answered before another began has the
// smaller id, and no two posts share one.
func (c *checker) ids() {
	byRoom := map[string][]*Post{}
	for i := range c.h.Posts {
		if p := &c.h.Posts[i]; p.Outcome == OK {
			byRoom[p.Room] = append(byRoom[p.Room], p)
		}
	}
	for room, ps := range byRoom {
		owner := map[uint64]string{}
		for _, p := range ps {
			if o, ok := owner[p.ID]; ok {
				c.fail("ids", "keys %s and %s in %s both answered id %d", o, p.Key, room, p.ID)
			}
			owner[p.ID] = p.Key
		}
		byEnd := slices.SortedFunc(slices.Values(ps), func(a, b *Post) int { return cmp.Compare(a.End, b.End) })
		byStart := slices.SortedFunc(slices.Values(ps), func(a, b *Post) int { return cmp.Compare(a.Start, b.Start) })
		var maxID uint64
		var maxKey string
		i := 0
		for _, b := range byStart {
			for i < len(byEnd) && byEnd[i].End < b.Start {
				if byEnd[i].ID > maxID {
					maxID, maxKey = byEnd[i].ID, byEnd[i].Key
				}
				i++
			}
			if b.ID <= maxID {
				c.fail("ids", "in %s key %s got id %d although key %s was answered id %d before it was posted", room, b.Key, b.ID, maxKey, maxID)
			}
		}
	}
}

// departure is how a member left: by a leave answered 204 ("left"), at
// its timeout as a silent member ("timeout"), or before its leave (""),
// and a moment it was gone by (the leave's start, the silent member's
// join's end).
type departure struct {
	reason string
	at     time.Duration
}

// capacity: every join's answer within capacity, and at no moment more
// members certainly in a room than it admits. A member is certainly in
// from its join's answer until the first try of its leave began, and no
// longer than the client timeout from its join's start (the server may
// remove a member that does not listen no sooner), or to the end for a
// reader that reached it. (A leave's 204 proves nothing more: a member
// already removed may be answered 204 by an instance that has not seen
// it yet.)
func (c *checker) capacity() {
	h := c.h
	leaveStart := map[string]time.Duration{}
	for _, l := range h.Leaves {
		if t, ok := leaveStart[l.ClientID]; !ok || l.Start < t {
			leaveStart[l.ClientID] = l.Start
		}
	}
	staying := map[string]bool{}
	for _, r := range h.Readers {
		staying[r.ClientID] = r.Drained
	}
	byRoom := map[string][]Join{}
	for _, j := range h.Joins {
		if j.ResumeOf != "" && j.Outcome == OK {
			if j.ClientID != j.ResumeOf {
				c.fail("resume", "%s's join with its token in %s made a new member %s (at %v)", j.ResumeOf, j.Room, j.ClientID, j.End)
			} else {
				continue // the same member again
			}
		}
		switch j.Outcome {
		case OK:
			c.figures.Joins++
			if j.Occupants > h.Capacity || j.Capacity != h.Capacity {
				c.fail("capacity", "a join into %s answered %d occupants, capacity %d (the servers' is %d)", j.Room, j.Occupants, j.Capacity, h.Capacity)
			}
			byRoom[j.Room] = append(byRoom[j.Room], j)
		case Refused:
			c.figures.Refused++
		default:
			c.figures.Unknown++
		}
	}
	const forever = time.Duration(1<<63 - 1)
	for room, js := range byRoom {
		for _, at := range js {
			var in []string
			for _, j := range js {
				until := j.Start + h.ClientTimeout
				if staying[j.ClientID] {
					until = forever
				}
				if t, ok := leaveStart[j.ClientID]; ok && t < until {
					until = t
				}
				if j.End <= at.End && until >= at.End {
					in = append(in, fmt.Sprintf("%s (joined %v–%v, in until %v)", j.ClientID, j.Start, j.End, until))
				}
			}
			if len(in) > h.Capacity {
				c.fail("capacity", "%s held %d members at once (at %v), capacity %d: %s", room, len(in), at.End, h.Capacity, strings.Join(in, ", "))
				break
			}
		}
	}
}

// retention: no room ever held more than MaxRoomMessages entries.
func (c *checker) retention() {
	if c.h.MaxRoomMessages <= 0 {
		return
	}
	for _, r := range c.h.Retained {
		if r.Count > c.h.MaxRoomMessages {
			c.fail("max-room-messages", "%s retained %d messages at %v, -max-room-messages %d", r.Room, r.Count, r.At, c.h.MaxRoomMessages)
		}
	}
}

// presence: each reader got exactly one peer-left for each member that
// departed after it joined, with the right reason, and none for a member
// still in the room; one for a member it never knew only when a join's
// outcome was unknown.
func (c *checker) presence() {
	h := c.h
	members := map[string]string{} // client id -> room
	unknownJoins := map[string]int{}
	for _, j := range h.Joins {
		if j.Outcome == OK {
			members[j.ClientID] = j.Room
		} else if j.Outcome == Unknown {
			unknownJoins[j.Room]++
		}
	}
	gone := map[string]departure{}
	maybeGone := map[string]bool{}
	for _, l := range h.Leaves {
		switch l.Outcome {
		case OK:
			if d, ok := gone[l.ClientID]; !ok || l.Start < d.at {
				gone[l.ClientID] = departure{"left", l.Start}
			}
		case Refused: // gone before its leave: removed at its timeout
			if _, ok := gone[l.ClientID]; !ok {
				gone[l.ClientID] = departure{"", l.Start}
			}
		case Unknown:
			maybeGone[l.ClientID] = true
		}
	}
	for _, j := range h.Joins {
		if j.Outcome == OK && j.Silent {
			gone[j.ClientID] = departure{"timeout", j.End}
		}
	}
	c.figures.Departures = len(gone)
	peerLefts := map[readerKey]map[string][]Delivery{}
	joinedStrangers := map[readerKey]map[string]bool{}
	for _, d := range h.Deliveries {
		if _, known := members[d.Peer]; d.Type == "peer-joined" && !known {
			rk := readerKey{d.Room, d.Reader}
			if joinedStrangers[rk] == nil {
				joinedStrangers[rk] = map[string]bool{}
			}
			joinedStrangers[rk][d.Peer] = true
		}
		if d.Type != "peer-left" {
			continue
		}
		rk := readerKey{d.Room, d.Reader}
		if peerLefts[rk] == nil {
			peerLefts[rk] = map[string][]Delivery{}
		}
		peerLefts[rk][d.Peer] = append(peerLefts[rk][d.Peer], d)
	}
	for _, r := range h.Readers {
		got := peerLefts[readerKey{r.Room, r.ClientID}]
		strangers := 0
		for peer, ds := range got {
			if len(ds) > 1 {
				c.fail("peer-left", "reader %s in %s got %d peer-left for %s", r.ClientID, r.Room, len(ds), peer)
			}
			room, known := members[peer]
			dep, departed := gone[peer]
			switch {
			case !known:
				strangers++
			case room != r.Room:
				c.fail("peer-left", "reader %s in %s got peer-left for %s, a member of %s", r.ClientID, r.Room, peer, room)
			case departed && dep.reason != "" && ds[0].Reason != dep.reason:
				c.fail("peer-left", "reader %s in %s got peer-left for %s with reason %q, want %q", r.ClientID, r.Room, peer, ds[0].Reason, dep.reason)
			case !departed && !maybeGone[peer]:
				c.fail("peer-left", "reader %s in %s got peer-left (%s) for %s, which never left", r.ClientID, r.Room, ds[0].Reason, peer)
			}
		}
		if n := len(joinedStrangers[readerKey{r.Room, r.ClientID}]); n > unknownJoins[r.Room] {
			c.fail("ghost", "reader %s in %s got peer-joined for %d members no join was answered (%d joins of unknown outcome)", r.ClientID, r.Room, n, unknownJoins[r.Room])
		}
		if strangers > unknownJoins[r.Room] {
			c.fail("peer-left", "reader %s in %s got peer-left for %d members nobody joined (%d joins of unknown outcome)", r.ClientID, r.Room, strangers, unknownJoins[r.Room])
		}
		if !r.Drained {
			continue // its missing messages are reported already
		}
		for peer, dep := range gone {
			if members[peer] != r.Room || dep.at < r.Joined || peer == r.ClientID {
				continue
			}
			if len(got[peer]) == 0 {
				c.fail("peer-left", "reader %s in %s never got peer-left for %s (%s)", r.ClientID, r.Room, peer, dep.reason)
			}
		}
	}
}

// webhooks: every change answered OK, and every silent member's timeout,
// arrived at least once; per room in increasing seq; no member.joined for
// a member that did not join.
func (c *checker) webhooks() {
	h := c.h
	c.figures.Webhooks = len(h.Webhooks)
	type key struct{ typ, room, client string }
	got := map[key]Webhook{}
	seqs := map[string][]Webhook{}
	for _, w := range h.Webhooks {
		k := key{w.Type, w.Room, w.ClientID}
		if _, ok := got[k]; !ok {
			got[k] = w
		}
		seqs[w.Room] = append(seqs[w.Room], w)
	}
	joined := map[string]bool{}
	unknownJoins := map[string]int{}
	for _, j := range h.Joins {
		switch j.Outcome {
		case OK:
			joined[j.ClientID] = true
			if _, ok := got[key{"member.joined", j.Room, j.ClientID}]; !ok {
				c.fail("webhook", "no member.joined for %s in %s", j.ClientID, j.Room)
			}
			if j.Silent {
				if w, ok := got[key{"member.left", j.Room, j.ClientID}]; !ok || w.Reason != "timeout" {
					c.fail("webhook", "no member.left (timeout) for %s in %s (got %+v)", j.ClientID, j.Room, w)
				}
			}
		case Unknown:
			unknownJoins[j.Room]++
		}
	}
	for _, l := range h.Leaves {
		w, ok := got[key{"member.left", l.Room, l.ClientID}]
		switch {
		case l.Outcome == OK && (!ok || w.Reason != "left"):
			c.fail("webhook", "no member.left (left) for %s in %s (got %+v)", l.ClientID, l.Room, w)
		case l.Outcome == Refused && !ok:
			c.fail("webhook", "no member.left for %s in %s, gone before its leave", l.ClientID, l.Room)
		}
	}
	strangers := map[string]int{}
	for k := range got {
		if k.typ == "member.joined" && !joined[k.client] {
			strangers[k.room]++
		}
	}
	failed := map[string][]int{}
	for _, f := range h.FailedJoins {
		failed[f.Room] = append(failed[f.Room], f.Status)
	}
	for room, n := range strangers {
		if n > unknownJoins[room] {
			c.fail("ghost", "%d member.joined in %s for members no join was answered (%d joins of unknown outcome); join tries there answered 5xx or nothing: %v (the client retries a 503 as a join that did nothing)", n, room, unknownJoins[room], failed[room])
		}
	}
	for room, ws := range seqs {
		for i := 1; i < len(ws); i++ {
			if ws[i].Seq <= ws[i-1].Seq {
				c.fail("webhook", "%s: %s (seq %d) arrived after %s (seq %d)", room, ws[i].Type, ws[i].Seq, ws[i-1].Type, ws[i-1].Seq)
				break
			}
		}
	}
}

// Summary is the violations by kind: how many of each, and up to n of
// each, one a line.
func Summary(vs []Violation, n int) string {
	count := map[string]int{}
	var kinds []string
	for _, v := range vs {
		if count[v.Kind] == 0 {
			kinds = append(kinds, v.Kind)
		}
		count[v.Kind]++
	}
	var b strings.Builder
	for _, k := range kinds {
		fmt.Fprintf(&b, "%s: %d\n", k, count[k])
		shown := 0
		for _, v := range vs {
			if v.Kind == k && shown < n {
				b.WriteString("  " + v.Detail + "\n")
				shown++
			}
		}
	}
	return b.String()
}
