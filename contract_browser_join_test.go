//go:build browser

// Browser tests of the ways into a call that do not simply work: a room
// locked with a password (contract_browser_test.go has the browser, the
// pages and how to run them).
package main

import (
	"testing"
	"time"
)

// A room locked with a password on the landing page: a page without the
// password is asked for it (with no "wrong password" yet), a wrong one is
// said to be wrong, and the right one joins the call.
func TestBrowserCallPassword(t *testing.T) {
	srv := newTestServer(t)
	base := srv.URL()
	b := newBrowser(t)
	room := randomRoom(t)
	var alice, bob *page
	submitPassword := func(t *testing.T, pw string) {
		t.Helper()
		if _, err := eval[bool](bob, `(document.getElementById('password-input').value = `+jsString(pw)+`,
			document.getElementById('password-form').requestSubmit(), true)`, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	phase(t, "alice opens the room with a password from the landing page", func(t *testing.T) {
		alice = b.open(t, "alice", base+"/")
		if _, err := eval[bool](alice, `(document.getElementById('room').value = `+jsString(room)+`,
			document.getElementById('password').value = 'sesame',
			document.getElementById('start-form').requestSubmit(), true)`, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		alice.waitFor(t, "the call page", `location.pathname === `+jsString("/r/"+room), 10*time.Second)
		alice.waitState(t, "waiting", 20*time.Second)
	})
	phase(t, "bob, without it, is asked for the password", func(t *testing.T) {
		bob = b.open(t, "bob", base+"/r/"+room)
		bob.waitFor(t, "the password view without an error", `!document.getElementById('password-view').hidden &&
		document.getElementById('password-error').hidden`, 20*time.Second)
	})
	phase(t, "a wrong password is said to be wrong", func(t *testing.T) {
		submitPassword(t, "wrong")
		bob.waitFor(t, "the wrong-password error", `!document.getElementById('password-view').hidden &&
		!document.getElementById('password-error').hidden`, 20*time.Second)
		screenshots(t, bob)
	})
	phase(t, "the right one joins the call", func(t *testing.T) {
		submitPassword(t, "sesame")
		waitConnected(t, 30*time.Second, alice, bob)
	})
}
