package storetest

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/tincan/tincan/store"
)

// Secret makes n random bytes under a name the first time and returns the
// same bytes to every caller after, racing or not, across restarts.
func testSecret(t testing.TB, open Opener) {
	e := start(t, open, store.Options{})
	secret := func(name string, n int) []byte {
		t.Helper()
		b, err := e.s.Secret(t.Context(), name, n)
		if err != nil {
			t.Fatalf("secret %s: %v", name, err)
		}
		return b
	}
	turn := secret("turn", 32)
	if len(turn) != 32 || bytes.Equal(turn, make([]byte, 32)) {
		t.Fatalf("secret of 32 random bytes: %x", turn)
	}
	if again := secret("turn", 32); !bytes.Equal(again, turn) {
		t.Fatalf("the secret changed from %x to %x", turn, again)
	}
	if other := secret("other", 16); len(other) != 16 || bytes.Equal(other, turn[:16]) {
		t.Fatalf("another name's secret %x, the first %x", other, turn)
	}

	var wg sync.WaitGroup
	raced := make([][]byte, 8)
	errs := make([]error, len(raced))
	for i := range raced {
		wg.Go(func() { raced[i], errs[i] = e.s.Secret(t.Context(), "raced", 32) })
	}
	wg.Wait()
	for i := range raced {
		if errs[i] != nil || len(raced[i]) != 32 || !bytes.Equal(raced[i], raced[0]) {
			t.Fatalf("racing first calls got %x (%v), the first of them %x", raced[i], errs[i], raced[0])
		}
	}

	e.restart()
	if again := secret("turn", 32); !bytes.Equal(again, turn) {
		t.Fatalf("the secret changed across a restart from %x to %x", turn, again)
	}
	if again := secret("raced", 32); !bytes.Equal(again, raced[0]) {
		t.Fatalf("the raced secret changed across a restart from %x to %x", raced[0], again)
	}
}

func testPing(t testing.TB, open Opener) {
	e := start(t, open, store.Options{})
	if err := e.s.Ping(t.Context()); err != nil {
		t.Fatalf("ping: %v", err)
	}
	e.restart()
	if err := e.s.Ping(t.Context()); err != nil {
		t.Fatalf("ping after a restart: %v", err)
	}
}

// Every call with an error result answers ErrClosed after Close (the
// handlers turn it into 503 shutting_down, which clients retry); the
// others do not panic.
func testCallsAfterClose(t testing.TB, open Opener) {
	e := start(t, open, store.Options{})
	a, b := e.join("r"), e.join("r")
	s := e.s
	e.close()
	ctx := t.Context()
	check := func(call string, err error) {
		t.Helper()
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", call, err)
		}
	}
	_, err := s.Join(ctx, store.JoinRequest{Room: "r2"})
	check("Join", err)
	_, err = s.Leave(ctx, b.Member, store.ReasonLeft)
	check("Leave", err)
	_, err = s.Authenticate(ctx, a.Token)
	check("Authenticate", err)
	_, err = s.Append(ctx, store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}})
	check("Append", err)
	_, _, err = s.Read(ctx, a.Member, store.ReadRequest{Limit: 10})
	check("Read", err)
	_, err = s.Occupants(ctx, "r")
	check("Occupants", err)
	_, err = s.Prune(ctx)
	check("Prune", err)
	_, err = s.Secret(ctx, "never made", 32)
	check("Secret", err)
	check("Ping", s.Ping(ctx))
	_, err = s.Outbox(ctx, 10)
	check("Outbox", err)
	check("Delivered", s.Delivered(ctx, []store.Event{{Seq: 1, Room: "r", Type: store.EventRoomCreated}}))
	_, _, err = s.ClaimOutbox(ctx)
	check("ClaimOutbox", err)
	_, err = s.Rooms(ctx, "", 10)
	check("Rooms", err)
	_, _, err = s.Room(ctx, "r")
	check("Room", err)
	check("Kick", s.Kick(ctx, b.Member))
	check("CloseRoom", s.CloseRoom(ctx, "r"))
	s.OutboxChanged(func() {})()
	s.Subscribe(a.Member, func(uint64) {})()
	s.Hold(a.Member)()
	s.Touch(a.Member)
	s.Capacity()

	// Nothing of that reached the state.
	e.reopen()
	if n := e.occupants("r"); n != 2 || !e.isMember(b) {
		t.Fatalf("after calls on a closed store, r has %d members (b one of them: %v), want a and b", n, e.isMember(b))
	}
}
