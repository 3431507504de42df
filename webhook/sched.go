package webhook

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/tincan/tincan/store"
)

// backoffBase is the cap of the first retry's delay; the cap doubles with
// every failure up to Config.MaxBackoff, and the delay is drawn uniformly
// below it (full jitter).
const backoffBase = 250 * time.Millisecond

// sched is the deliverer's state: pure bookkeeping, driven by one goroutine
// with the time passed in, so that its rules can be tested without clocks.
//
// The receiver is either up (rooms are sent to in parallel, up to
// maxInFlight, each room waiting out its own backoff after a failure) or
// probed (one attempt at a time, spaced by a backoff of the receiver's own,
// the rooms taking turns). It starts probed: the first attempt finds out.
// Any failed attempt while up makes it probed; any 2xx makes it up, and
// then every room that failed only while probed is due at once.
type sched struct {
	maxInFlight int
	maxBackoff  time.Duration
	rand        func(n int64) int64 // [0, n)

	rooms     map[string]*room
	inFlight  int
	total     int  // events queued, in flight included
	truncated bool // the last fetch may have left events out

	probing   bool
	probeFail int       // failed attempts since probing began
	probeAt   time.Time // no probe before
}

type room struct {
	name      string
	queue     []store.Event // seq order; queue[0] is the head
	busy      bool          // queue[0] is in flight
	fails     int           // failed attempts of the head
	nextAt    time.Time     // the head waits (a failure while up)
	lastTry   time.Time
	delivered uint64 // highest seq delivered or dropped
}

func newSched(maxInFlight int, maxBackoff time.Duration) *sched {
	return &sched{
		maxInFlight: maxInFlight,
		maxBackoff:  maxBackoff,
		rand:        rand.Int64N,
		rooms:       map[string]*room{},
		probing:     true,
	}
}

// backoff is a delay after n failures (n >= 1): full jitter below
// min(maxBackoff, backoffBase·2^(n-1)).
func (s *sched) backoff(n int) time.Duration {
	c := s.maxBackoff
	if n < 1 {
		n = 1
	}
	if n < 30 {
		if b := backoffBase << (n - 1); b < c {
			c = b
		}
	}
	if c <= 0 {
		return 0
	}
	return time.Duration(s.rand(int64(c)))
}

// merge adds the events of a fetch. Events already queued, in flight or
// delivered are ignored, so a fetch may overlap with anything.
func (s *sched) merge(events []store.Event, truncated bool) {
	s.truncated = truncated
	touched := map[*room]bool{}
	for _, e := range events {
		r := s.rooms[e.Room]
		if r == nil {
			r = &room{name: e.Room}
			s.rooms[e.Room] = r
		}
		if e.Seq <= r.delivered {
			continue
		}
		if _, found := slices.BinarySearchFunc(r.queue, e.Seq, func(q store.Event, seq uint64) int { return cmp.Compare(q.Seq, seq) }); found {
			continue
		}
		r.queue = append(r.queue, e)
		s.total++
		touched[r] = true
	}
	for r := range touched {
		if r.busy {
			// The head stays where it is; only what follows it is sorted.
			slices.SortFunc(r.queue[1:], func(a, b store.Event) int { return cmp.Compare(a.Seq, b.Seq) })
		} else {
			slices.SortFunc(r.queue, func(a, b store.Event) int { return cmp.Compare(a.Seq, b.Seq) })
		}
	}
	for name, r := range s.rooms {
		s.forget(name, r)
	}
}

func (s *sched) forget(name string, r *room) {
	if len(r.queue) == 0 && !r.busy {
		delete(s.rooms, name)
	}
}

// pop removes the head of r, delivered or dropped.
func (s *sched) pop(r *room) store.Event {
	e := r.queue[0]
	r.queue = r.queue[1:]
	s.total--
	r.fails, r.nextAt = 0, time.Time{}
	r.delivered = max(r.delivered, e.Seq)
	return e
}

// expired removes and returns every head older than maxAge at now (not in
// flight), with what follows it when that is old too.
func (s *sched) expired(now time.Time, maxAge time.Duration) []store.Event {
	var out []store.Event
	for name, r := range s.rooms {
		for !r.busy && len(r.queue) > 0 && now.Sub(r.queue[0].Time) > maxAge {
			out = append(out, s.pop(r))
		}
		s.forget(name, r)
	}
	slices.SortFunc(out, func(a, b store.Event) int { return cmp.Compare(a.Seq, b.Seq) })
	return out
}

// next marks the rooms to send to now as busy and returns them (their
// head is the event to send), and how long to wait before asking again
// when nothing else happens (0: no deadline).
func (s *sched) next(now time.Time, maxAge time.Duration) (start []*room, wait time.Duration) {
	var due, later []*room
	for _, r := range s.rooms {
		if r.busy || len(r.queue) == 0 {
			continue
		}
		if s.probing || !r.nextAt.After(now) {
			due = append(due, r)
		} else {
			later = append(later, r)
		}
	}
	deadline := time.Time{}
	soon := func(t time.Time) {
		if deadline.IsZero() || t.Before(deadline) {
			deadline = t
		}
	}
	for _, r := range s.rooms {
		if !r.busy && len(r.queue) > 0 {
			soon(r.queue[0].Time.Add(maxAge).Add(time.Millisecond))
		}
	}
	if s.probing {
		switch {
		case len(due) == 0 || s.inFlight > 0:
		case now.Before(s.probeAt):
			soon(s.probeAt)
		default:
			// The room due first (its own backoff from a failure while up),
			// then the one tried least recently, then the oldest event.
			slices.SortFunc(due, func(a, b *room) int {
				aDue, bDue := !a.nextAt.After(now), !b.nextAt.After(now)
				if aDue != bDue {
					if aDue {
						return -1
					}
					return 1
				}
				if !aDue {
					return a.nextAt.Compare(b.nextAt)
				}
				if c := a.lastTry.Compare(b.lastTry); c != 0 {
					return c
				}
				return cmp.Compare(a.queue[0].Seq, b.queue[0].Seq)
			})
			if r := due[0]; r.nextAt.After(now) {
				soon(r.nextAt)
			} else {
				start = append(start, r)
			}
		}
	} else {
		slices.SortFunc(due, func(a, b *room) int { return cmp.Compare(a.queue[0].Seq, b.queue[0].Seq) })
		n := min(len(due), s.maxInFlight-s.inFlight)
		start = append(start, due[:max(n, 0)]...)
		for _, r := range later {
			soon(r.nextAt)
		}
	}
	for _, r := range start {
		r.busy = true
		r.lastTry = now
		s.inFlight++
	}
	if !deadline.IsZero() {
		wait = max(deadline.Sub(now), time.Millisecond)
	}
	return start, wait
}

// outcome of one attempt.
type outcome int

const (
	ok      outcome = iota // 2xx: delivered
	failed                 // anything else but 410: retried
	gone                   // 410 Gone: dropped
	aborted                // the run ended mid-attempt: neither
)

// done records the outcome of r's attempt at its head. retryAfter is what
// the receiver asked for (429, 503), 0 if nothing. It returns the event
// when it left the queue (ok, gone) and whether the receiver just came back.
func (s *sched) done(r *room, o outcome, now time.Time, retryAfter time.Duration) (e store.Event, popped, recovered bool) {
	r.busy = false
	s.inFlight--
	defer s.forget(r.name, r)
	switch o {
	case ok, gone:
		recovered = s.probing && s.probeFail > 0
		// Any answer but a failure means the receiver is there: stop
		// probing. The rooms that failed while it was probed were not
		// given a backoff of their own, so they are due at once.
		s.probing, s.probeFail, s.probeAt = false, 0, time.Time{}
		return s.pop(r), true, recovered
	case failed:
		r.fails++
		if !s.probing {
			// The first failure while up: this room waits its own backoff
			// (so that a room the receiver rejects alone does not keep
			// the others probed), and the receiver is probed.
			r.nextAt = now.Add(s.backoff(r.fails))
			s.probing = true
		}
		s.probeFail++
		s.probeAt = now.Add(s.backoff(s.probeFail))
		if retryAfter > 0 {
			if t := now.Add(min(retryAfter, s.maxBackoff)); t.After(s.probeAt) {
				s.probeAt = t
			}
		}
	}
	return store.Event{}, false, false
}
