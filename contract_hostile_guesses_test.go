//go:build unix

// (unix: the test reads the process's CPU time with getrusage.)

package main

// Password guessing: after a few failed guesses from one address, joins of
// the room are refused with 429 before any bcrypt comparison, so that the
// guesses no longer cost the server's CPU, and the right password gets in
// at once after the window. A room's member is never locked out.

import (
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// processCPU is the CPU time this process (the test and the server in it)
// has used so far, user and system.
func processCPU(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// joinWith asks to join room with password; header holds names and values
// in turn.
func joinWith(t *testing.T, e *endpoint, room, password string, header ...string) answer {
	t.Helper()
	return e.do(t, "POST", "/rooms/"+room+"/join", `{"password":"`+password+`"}`, header...)
}

func TestPasswordGuessingIsCutOff(t *testing.T) {
	const (
		guesses = 2  // failed guesses one address may make in the window
		refused = 30 // guesses it makes after them
	)
	window := 4 * time.Second
	srv := newTestServer(t, withFlags("-password-guesses", strconv.Itoa(guesses), "-password-guess-window", window.String()))
	first := joinWith(t, srv.endpoint, "locked", "right")
	if first.Status != 201 {
		t.Fatalf("the first member locks the room: %d %s", first.Status, first.Body)
	}
	owner := &client{ep: srv.endpoint, Room: "locked"}
	first.json(t, &owner.joinAnswer)

	// The address's guesses, made at once so that the window starts for
	// both together: each costs a bcrypt comparison.
	cpu := processCPU(t)
	var wg sync.WaitGroup
	failed := make([]answer, guesses)
	for i := range failed {
		wg.Add(1)
		go func() {
			defer wg.Done()
			failed[i], _ = srv.request(t.Context(), "POST", "/rooms/locked/join", `{"password":"wrong"}`)
		}()
	}
	wg.Wait()
	lockedOut := time.Now()
	cpuFailed := processCPU(t) - cpu
	for i, a := range failed {
		if a.Status != 403 || a.problem(t) != "bad_password" {
			t.Fatalf("failed guess %d: %d %s, want 403 bad_password", i, a.Status, a.Body)
		}
	}

	// From then on every guess from the address is refused, the right
	// password too, before any comparison: they cost far less CPU than
	// the two that were compared.
	cpu = processCPU(t)
	var last answer
	var lastAt time.Time
	for i := range refused {
		password := "wrong"
		if i%2 == 1 {
			password = "right"
		}
		last, lastAt = joinWith(t, srv.endpoint, "locked", password), time.Now()
		if last.Status != 429 || last.problem(t) != "too_many_guesses" {
			t.Fatalf("guess %d after the limit (%s): %d %s, want 429 too_many_guesses", i, password, last.Status, last.Body)
		}
		if s, err := strconv.Atoi(last.Header.Get("Retry-After")); err != nil || s < 1 || time.Duration(s)*time.Second > window {
			t.Fatalf("guess %d after the limit: Retry-After %q, want 1 to %v", i, last.Header.Get("Retry-After"), window)
		}
	}
	cpuRefused := processCPU(t) - cpu
	if since := time.Since(lockedOut); since >= window {
		t.Fatalf("the refused guesses took %v, past the window of %v: this machine is too slow for the test", since, window)
	}
	t.Logf("CPU: %v for %d guesses compared, %v for %d refused", cpuFailed, guesses, cpuRefused, refused)
	if cpuRefused >= cpuFailed {
		t.Fatalf("%d refused guesses cost %v of CPU, %d compared ones %v: the refused ones still compare passwords", refused, cpuRefused, guesses, cpuFailed)
	}

	// The room's member, from the same address, is not locked out.
	owner.resume(t)

	// After the window (as the last Retry-After said) the right password
	// gets in at once.
	wait, _ := strconv.Atoi(last.Header.Get("Retry-After"))
	time.Sleep(time.Until(lastAt.Add(time.Duration(wait) * time.Second)))
	if a := joinWith(t, srv.endpoint, "locked", "right"); a.Status != 201 {
		t.Fatalf("the right password after the window: %d %s", a.Status, a.Body)
	}
}
