package storetest

import (
	"testing"
	"time"

	"github.com/tincan/tincan/store"
)

// peerLefts lists the peer-left events m has been sent.
func (e *engine) peerLefts(m store.Member) []entry {
	e.t.Helper()
	var out []entry
	for _, msg := range e.read(m, 0) {
		if en := parse(e.t, msg); en.Type == "peer-left" {
			out = append(out, en)
		}
	}
	return out
}

// wantTimedOut checks that m was told, once, that peer timed out.
func (e *engine) wantTimedOut(m store.Member, peer string) {
	e.t.Helper()
	got := e.peerLefts(m)
	if len(got) != 1 || got[0].Peer != peer || got[0].Reason != string(store.ReasonTimeout) {
		e.t.Fatalf("%s was told %+v, want one peer-left event for %s, reason %q", m.ID, got, peer, store.ReasonTimeout)
	}
}

// A member that neither holds nor touches is removed once the client
// timeout has passed: once, with a single peer-left event of reason
// timeout, and its readers are told. A member that holds stays.
func testPresenceSilentMemberRemovedOnce(t testing.TB, open Opener) {
	const timeout = 300 * time.Millisecond
	e := start(t, open, store.Options{ClientTimeout: timeout})
	a, b := e.join("r"), e.join("r")
	releaseA := e.s.Hold(a.Member)
	inB := e.subscribe(b.Member)
	eventually(t, "b, silent, is removed", func() bool { return !e.isMember(b) })
	inB.waitFor(t, "of b's removal (upto 0) to b's subscriber", func(upto uint64) bool { return upto == 0 })
	e.wantTimedOut(a.Member, b.ID)
	if n := e.occupants("r"); n != 1 {
		t.Fatalf("%d occupants after b's removal, want 1", n)
	}

	time.Sleep(4 * timeout) // time enough for a second removal, if there were one
	e.wantTimedOut(a.Member, b.ID)
	if !e.isMember(a) {
		t.Fatal("a, holding all along, was removed")
	}

	releaseA()
	eventually(t, "a, silent after its release, is removed", func() bool { return !e.isMember(a) })
	if n := e.occupants("r"); n != 0 {
		t.Fatalf("the last member timed out, the room has %d occupants", n)
	}
}

// A member is not removed while any of its holds lasts, nor just after its
// last release; then it is, once.
func testPresenceHoldKeepsMember(t testing.TB, open Opener) {
	const timeout = 300 * time.Millisecond
	e := start(t, open, store.Options{ClientTimeout: timeout})
	a, b := e.join("r"), e.join("r")
	defer e.s.Hold(a.Member)()
	first, second := e.s.Hold(b.Member), e.s.Hold(b.Member)
	time.Sleep(4 * timeout)
	if !e.isMember(b) {
		t.Fatal("b was removed while it held twice")
	}
	first()
	time.Sleep(4 * timeout)
	if !e.isMember(b) {
		t.Fatal("b was removed while one of its two holds lasted")
	}
	released := time.Now()
	second()
	if !e.isMember(b) && fastEnough(t, released, timeout/2, "that b stays just after its release") {
		t.Fatalf("b was removed within the client timeout (%v) after its last release", timeout)
	}
	eventually(t, "b, silent after its last release, is removed", func() bool { return !e.isMember(b) })
	e.wantTimedOut(a.Member, b.ID)
}

// Touch restarts the client timeout: a member touched often enough stays
// however long it does not hold; untouched, it goes.
func testPresenceTouchExtends(t testing.TB, open Opener) {
	const timeout = 600 * time.Millisecond
	e := start(t, open, store.Options{ClientTimeout: timeout})
	a, b := e.join("r"), e.join("r")
	defer e.s.Hold(a.Member)()
	var longest time.Duration
	last := time.Now()
	for end := last.Add(3 * timeout); time.Now().Before(end); time.Sleep(timeout / 20) {
		e.s.Touch(b.Member)
		now := time.Now()
		longest, last = max(longest, now.Sub(last)), now
		if !e.isMember(b) {
			if longest < timeout/2 {
				t.Fatalf("b was removed although touched at least every %v (client timeout %v)", longest, timeout)
			}
			t.Logf("machine too slow to keep b alive (%v between touches, client timeout %v): check skipped", longest, timeout)
			return
		}
	}
	eventually(t, "b, no longer touched, is removed", func() bool { return !e.isMember(b) })
	e.wantTimedOut(a.Member, b.ID)
}

// After a restart every member has the whole client timeout again, however
// long ago it was last heard of; then the silent ones go.
func testPresenceRestartGivesWholeTimeout(t testing.TB, open Opener) {
	const timeout = 600 * time.Millisecond
	e := start(t, open, store.Options{})
	e.join("r")
	e.join("r")
	e.join("solo")
	e.close()
	time.Sleep(timeout + timeout/2) // longer than the client timeout, since anyone was heard of

	e.opts.ClientTimeout = timeout
	opened := time.Now()
	e.reopen()
	if r, solo := e.occupants("r"), e.occupants("solo"); (r != 2 || solo != 1) && fastEnough(t, opened, timeout/2, "the members just after a restart") {
		t.Fatalf("just after a restart, r has %d members and solo %d; want 2 and 1: each gets the whole client timeout", r, solo)
	}
	eventually(t, "the members, silent since the restart, are removed", func() bool {
		return e.occupants("r") == 0 && e.occupants("solo") == 0
	})
}
