//go:build browser

// Browser tests of the ways into a call that do not simply work: a room
// locked with a password, links that name no room (contract_browser_test.go
// has the browser, the pages and how to run them).
package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
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

// Links under /r/ that name no call open, in a browser, a page that says
// what is wrong with the link (and offers the room a trailing part hides),
// under the status of the refusal; no room is joined. An API client asking
// for the same paths still gets problem+json.
func TestBrowserBadRoomLinks(t *testing.T) {
	srv := newTestServer(t)
	base := srv.URL()
	b := newBrowser(t)
	cases := []struct {
		path   string // as typed; the browser percent-encodes it
		sent   string // as sent
		status int
		code   string // of the problem an API client gets
		says   string
		meant  string // the room a fix link leads to, if any
	}{
		{"/r/bad name", "/r/bad%20name", 400, "bad_room_name", "“bad name” is not a room name", ""},
		{"/r/", "/r/", 400, "bad_room_name", "names no room", ""},
		{"/r/x/", "/r/x/", 404, "not_found", "something after the room name x", "x"},
		{"/r/x/y", "/r/x/y", 404, "not_found", "something after the room name x", "x"},
	}
	for i, c := range cases {
		phase(t, c.path, func(t *testing.T) {
			p := b.open(t, fmt.Sprintf("link%d", i), base+c.path)
			p.waitState(t, "bad-link", 10*time.Second)
			type seen struct {
				Status int    `json:"status"`
				Path   string `json:"path"`
				Shown  bool   `json:"shown"`
				Text   string `json:"text"`
				Fix    string `json:"fix"`
			}
			got, err := eval[seen](p, `(() => { const fix = document.getElementById('error-fix');
				return { status: performance.getEntriesByType('navigation')[0].responseStatus, path: location.pathname,
					shown: !document.getElementById('error-view').hidden && document.getElementById('call-view').hidden,
					text: document.getElementById('error-view').textContent,
					fix: fix.hidden ? '' : fix.getAttribute('href') }; })()`, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if got.Path != c.sent || got.Status != c.status {
				t.Errorf("the browser got %d for %s, want %d for %s", got.Status, got.Path, c.status, c.sent)
			}
			if !got.Shown || !strings.Contains(got.Text, c.says) {
				t.Errorf("error view shown %v, saying %q; want it to say %q", got.Shown, got.Text, c.says)
			}
			if want := map[bool]string{true: "/r/" + c.meant, false: ""}[c.meant != ""]; got.Fix != want {
				t.Errorf("fix link %q, want %q", got.Fix, want)
			}
			if i == 0 {
				screenshots(t, p)
			}

			req, err := http.NewRequest("GET", base+c.sent, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, accept := range []string{"", "application/json", "*/*"} {
				req.Header.Set("Accept", accept)
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				var problem struct{ Code string }
				err = json.NewDecoder(res.Body).Decode(&problem)
				res.Body.Close()
				if ct := res.Header.Get("Content-Type"); res.StatusCode != c.status || ct != "application/problem+json" || err != nil || problem.Code != c.code {
					t.Errorf("GET %s, Accept %q: %d %s code %q (%v); want %d problem+json %s", c.sent, accept, res.StatusCode, ct, problem.Code, err, c.status, c.code)
				}
			}
		})
	}
	phase(t, "the fix link of /r/x/ opens the call of x", func(t *testing.T) {
		p := b.open(t, "fix", base+"/r/x/")
		p.waitState(t, "bad-link", 10*time.Second)
		if n := srv.roomInfo(t, "x").Occupants; n != 0 {
			t.Fatalf("room x has %d members before the fix link is followed", n)
		}
		if _, err := eval[bool](p, `(document.getElementById('error-fix').click(), true)`, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		p.waitState(t, "waiting", 20*time.Second)
		if path := p.str(`location.pathname`); path != "/r/x" {
			t.Errorf("the fix link led to %s", path)
		}
		if n := srv.roomInfo(t, "x").Occupants; n != 1 {
			t.Errorf("room x has %d members after the fix link, want 1", n)
		}
	})
}
