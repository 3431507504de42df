package main

// The shape of a long test: named phases run in order, and waiting for a
// condition without depending on the machine's speed.

import (
	"testing"
	"time"
)

// phase runs one named step of a scenario as a subtest of t; its name says
// what it checks. The steps after it build on what it did, so a phase that
// fails ends the scenario (and -run can select a phase only together with
// the ones before it). Checks that do not build on one another are plain
// t.Run subtests. What must outlive a phase (a stream, a connection) is
// opened by the test itself, not inside the phase, whose cleanups run at
// its end.
func phase(t *testing.T, name string, step func(t *testing.T)) {
	t.Helper()
	if !t.Run(name, step) {
		t.FailNow()
	}
}

// waitFor polls cond until it holds, failing t after 30s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
