package webhook

import (
	"fmt"
	"testing"
	"time"

	"github.com/tincan/tincan/store"
)

// The scheduler's rules, with the time passed in: no clock, no timing.

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func events(rooms, perRoom int) []store.Event {
	var out []store.Event
	seq := uint64(0)
	for i := range perRoom {
		for r := range rooms {
			seq++
			out = append(out, store.Event{Seq: seq, Room: fmt.Sprintf("r%02d", r), Type: fmt.Sprint(i), Time: t0})
		}
	}
	return out
}

func maxJitter(n int64) int64 { return n - 1 } // the longest delay full jitter may draw

func TestSchedStartsProbingThenFansOut(t *testing.T) {
	s := newSched(8, 10*time.Second)
	s.rand = maxJitter
	s.merge(events(20, 2), false)
	start, _ := s.next(t0, time.Hour)
	if len(start) != 1 || start[0].queue[0].Seq != 1 {
		t.Fatalf("first dispatch: %d rooms, want the oldest event alone (a probe)", len(start))
	}
	if more, _ := s.next(t0, time.Hour); len(more) != 0 {
		t.Fatalf("a second attempt while the probe is in flight")
	}
	s.done(start[0], ok, t0, 0)
	start, _ = s.next(t0, time.Hour)
	if len(start) != 8 {
		t.Fatalf("after a 2xx: %d rooms at once, want 8", len(start))
	}
	for i, r := range start {
		if want := uint64(i + 2); r.queue[0].Seq != want {
			t.Errorf("dispatch %d: seq %d, want %d (oldest first)", i, r.queue[0].Seq, want)
		}
	}
}

func TestSchedRoomInOrderOneAtATime(t *testing.T) {
	s := newSched(8, 10*time.Second)
	s.probing = false
	s.merge(events(1, 3), false)
	start, _ := s.next(t0, time.Hour)
	if len(start) != 1 {
		t.Fatalf("%d", len(start))
	}
	// A fetch while the head is in flight changes nothing.
	s.merge(events(1, 3), false)
	if more, _ := s.next(t0, time.Hour); len(more) != 0 || s.total != 3 {
		t.Fatalf("the room's next event went while its head was in flight (total %d)", s.total)
	}
	e, popped, _ := s.done(start[0], ok, t0, 0)
	if !popped || e.Seq != 1 {
		t.Fatalf("done: %v %v", e, popped)
	}
	// A stale fetch with the delivered event does not bring it back.
	s.merge(events(1, 3), false)
	start, _ = s.next(t0, time.Hour)
	if len(start) != 1 || start[0].queue[0].Seq != 2 || s.total != 2 {
		t.Fatalf("after seq 1: %v, total %d", start, s.total)
	}
}

func TestSchedOutageProbesOneThenDrainsAtOnce(t *testing.T) {
	s := newSched(8, 10*time.Second)
	s.rand = maxJitter
	s.probing = false
	s.merge(events(20, 1), false)
	now := t0
	start, _ := s.next(now, time.Hour)
	if len(start) != 8 {
		t.Fatalf("%d", len(start))
	}
	// The receiver goes down: the first failure starts probing; its room
	// waits its own backoff.
	trigger := start[0]
	s.done(trigger, failed, now, 0)
	if !s.probing || !trigger.nextAt.After(now) {
		t.Fatalf("probing %v, trigger's nextAt %v", s.probing, trigger.nextAt)
	}
	for _, r := range start[1:] {
		s.done(r, failed, now, 0)
		if !r.nextAt.IsZero() {
			t.Errorf("room %s failed while probing got a backoff of its own", r.name)
		}
	}
	// Probes: one at a time, spaced by the receiver's backoff, taking turns.
	probed := map[string]bool{}
	for i := range 30 {
		start, wait := s.next(now, time.Hour)
		if len(start) == 0 {
			if wait <= 0 || wait > 10*time.Second {
				t.Fatalf("probe %d: nothing to send and wait %v", i, wait)
			}
			now = now.Add(wait)
			start, _ = s.next(now, time.Hour)
		}
		if len(start) != 1 {
			t.Fatalf("probe %d: %d attempts at once", i, len(start))
		}
		probed[start[0].name] = true
		if more, _ := s.next(now, time.Hour); len(more) != 0 {
			t.Fatalf("probe %d: a second attempt while one is in flight", i)
		}
		s.done(start[0], failed, now, 0)
	}
	if len(probed) != 20 {
		t.Errorf("30 probes went to %d of 20 rooms", len(probed))
	}
	if d := s.probeAt.Sub(now); d > 10*time.Second {
		t.Errorf("probe backoff %v beyond MaxBackoff", d)
	}
	// It comes back: the probe's 2xx makes every room due at once, however
	// long their probes' backoff was; the trigger room was probed too, and
	// its backoff from before the outage is long past.
	for {
		start, wait := s.next(now, time.Hour)
		if len(start) == 1 {
			_, _, recovered := s.done(start[0], ok, now, 0)
			if !recovered {
				t.Error("not reported as a recovery")
			}
			break
		}
		now = now.Add(wait)
	}
	start, _ = s.next(now, time.Hour)
	if len(start) != 8 {
		t.Fatalf("after the recovery %d rooms at once, want 8 at the same instant", len(start))
	}
	for len(start) > 0 {
		for _, r := range start {
			s.done(r, ok, now, 0)
		}
		start, _ = s.next(now, time.Hour)
	}
	if s.total != 0 {
		t.Errorf("%d events left: the backlog did not drain without time passing", s.total)
	}
}

func TestSchedFailingRoomAloneDoesNotHoldOthers(t *testing.T) {
	s := newSched(8, 10*time.Second)
	s.rand = maxJitter
	s.probing = false
	s.merge(events(3, 5), false)
	now := t0
	bad := s.rooms["r00"]
	for round := 0; s.total > 5; round++ {
		if round > 100 {
			t.Fatalf("the other rooms did not drain: %d left", s.total)
		}
		start, wait := s.next(now, time.Hour)
		if len(start) == 0 {
			now = now.Add(wait)
			continue
		}
		for _, r := range start {
			if r == bad {
				s.done(r, failed, now, 0)
			} else {
				s.done(r, ok, now, 0)
			}
		}
	}
	if len(bad.queue) != 5 || bad.fails == 0 {
		t.Errorf("the failing room: %d queued, %d fails", len(bad.queue), bad.fails)
	}
	if now.Sub(t0) > 10*time.Second {
		t.Errorf("the others took %v of backoff to drain", now.Sub(t0))
	}
}

func TestSchedRetryAfterAndBackoffCap(t *testing.T) {
	s := newSched(8, 10*time.Second)
	s.rand = maxJitter
	for n, want := range map[int]time.Duration{1: 250 * time.Millisecond, 2: 500 * time.Millisecond, 3: time.Second, 6: 8 * time.Second, 7: 10 * time.Second, 100: 10 * time.Second} {
		if got := s.backoff(n) + 1; got != want {
			t.Errorf("backoff(%d) at most %v, want %v", n, got, want)
		}
	}
	s.rand = func(int64) int64 { return 0 }
	s.merge(events(1, 1), false)
	start, _ := s.next(t0, time.Hour)
	s.done(start[0], failed, t0, 3*time.Second)
	if got := s.probeAt.Sub(t0); got != 3*time.Second {
		t.Errorf("Retry-After 3s: next probe in %v", got)
	}
	start, _ = s.next(t0.Add(3*time.Second), time.Hour)
	s.done(start[0], failed, t0.Add(3*time.Second), time.Hour)
	if got := s.probeAt.Sub(t0.Add(3 * time.Second)); got != 10*time.Second {
		t.Errorf("Retry-After 1h: next probe in %v, want MaxBackoff", got)
	}
}

func TestSchedExpired(t *testing.T) {
	s := newSched(8, 10*time.Second)
	evs := events(2, 3)
	for i := range evs {
		evs[i].Time = t0.Add(time.Duration(i) * time.Minute)
	}
	s.merge(evs, false)
	old := s.expired(t0.Add(time.Hour+150*time.Second), time.Hour)
	// Times 0..5 min; older than an hour at 1h2.5m: the first three.
	if len(old) != 3 || old[0].Seq != 1 || old[2].Seq != 3 || s.total != 3 {
		t.Fatalf("expired %v, total %d", old, s.total)
	}
	start, _ := s.next(t0, time.Hour)
	if len(start) != 1 {
		t.Fatal(len(start))
	}
	// In flight: not dropped under it.
	if old := s.expired(t0.Add(10*time.Hour), time.Hour); len(old) != 1 {
		t.Errorf("expired %v: the room in flight is left alone", old)
	}
}
