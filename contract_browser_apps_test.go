//go:build browser

// Browser test of apps in control: the call page on a server started with
// -auth jwt, joined with the application's join tokens from the URL
// fragment, and a member kicked through the admin API
// (contract_browser_test.go has the browser, the pages and how to run them;
// contract_apps_test.go mints the tokens).
package main

import (
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Two pages open /r/<room>#token=<JWT> with their own sub and name and the
// call connects, each member carrying its identity; a page without a token
// is refused (401 jwt_required), says so and never joins; a member kicked
// through the admin API ends with dataset.ended "kicked" and does not join
// again, though its join token is still valid.
func TestBrowserAppsJoinTokensAndKick(t *testing.T) {
	srv := newTestServer(t, withEnv("TINCAN_AUTH", "jwt"), withEnv("TINCAN_JWT_SECRET", testJWTSecret),
		withEnv("TINCAN_ADMIN_KEY", testAdminKey))
	base := srv.URL()
	b := newBrowser(t)
	room := randomRoom(t)
	// Long-lived tokens: after the kick, bob's would still let him in, so
	// only the page's own restraint keeps him out.
	token := func(sub, name string) string {
		return mintJWT(t, jwt.MapClaims{"sub": sub, "room": room, "name": name, "exp": time.Now().Add(time.Hour).Unix()})
	}
	type adminRoom struct {
		Occupants int
		Members   []struct {
			ClientID string `json:"client_id"`
			Identity string
			Name     string
		}
	}
	inspect := func(t *testing.T) adminRoom {
		t.Helper()
		var r adminRoom
		a := adminDo(t, srv.endpoint, "GET", "/rooms/"+room, "")
		if a.Status != 200 {
			t.Fatalf("GET /admin/v1/rooms/%s: %d %s", room, a.Status, a.Body)
		}
		a.json(t, &r)
		return r
	}
	var alice, bob, nobody *page

	phase(t, "alice opens the room with her join token and waits", func(t *testing.T) {
		alice = b.open(t, "alice", base+"/r/"+room+"#token="+token("alice-id", "Alice"))
		alice.waitState(t, "waiting", 20*time.Second)
	})

	phase(t, "a page without a token is refused with 401 jwt_required and never joins", func(t *testing.T) {
		// What the server says to a join without a token, for comparison.
		direct := srv.do(t, "POST", "/rooms/"+room+"/join", "")
		if direct.Status != 401 || direct.problem(t) != "jwt_required" {
			t.Fatalf("a join without a token: %d %s, want 401 jwt_required", direct.Status, direct.Body)
		}
		var problem struct{ Detail string }
		direct.json(t, &problem)

		nobody = b.open(t, "nobody", base+"/r/"+room)
		nobody.waitState(t, "failed", 20*time.Second)
		type seen struct {
			Shown    bool   `json:"shown"`
			Text     string `json:"text"`
			Statuses []int  `json:"statuses"`
			ClientID string `json:"clientId"`
		}
		got, err := eval[seen](nobody, `(() => ({
			shown: !document.getElementById('error-view').hidden,
			text: document.getElementById('error-text').textContent,
			statuses: performance.getEntriesByType('resource')
				.filter((e) => new URL(e.name).pathname === `+jsString("/rooms/"+room+"/join")+`)
				.map((e) => e.responseStatus),
			clientId: document.documentElement.dataset.clientId || '',
		}))()`, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Shown || got.Text != problem.Detail {
			t.Errorf("the page without a token: error view shown %v saying %q; want it to say the server's %q", got.Shown, got.Text, problem.Detail)
		}
		if len(got.Statuses) == 0 {
			t.Errorf("the page without a token made no join request")
		}
		for _, s := range got.Statuses {
			if s != 401 {
				t.Errorf("the page's join requests were answered %v, want only 401", got.Statuses)
				break
			}
		}
		if got.ClientID != "" {
			t.Errorf("the page without a token has a client id %q", got.ClientID)
		}
		// It stays out: no retry turns it into a member, alice stays alone.
		time.Sleep(3 * time.Second)
		if s := nobody.state(); s != "failed" {
			t.Errorf("the page without a token went from failed to %q", s)
		}
		if s := alice.state(); s != "waiting" {
			t.Errorf("alice is %q after the refused page, want waiting", s)
		}
		if n := inspect(t).Occupants; n != 1 {
			t.Errorf("%d occupants after the refused page, want 1", n)
		}
		screenshots(t, nobody)
	})

	phase(t, "bob opens the room with his join token and the call connects", func(t *testing.T) {
		bob = b.open(t, "bob", base+"/r/"+room+"#token="+token("bob-id", "Bob"))
		waitConnected(t, 30*time.Second, alice, bob)
		ids := map[string]string{alice.clientID(): "alice-id Alice", bob.clientID(): "bob-id Bob"}
		r := inspect(t)
		if r.Occupants != 2 || len(r.Members) != 2 {
			t.Fatalf("the room after both joined: %+v", r)
		}
		for _, m := range r.Members {
			if want, ok := ids[m.ClientID]; !ok || m.Identity+" "+m.Name != want {
				t.Errorf("member %s is %q %q; the pages' ids and identities: %v", m.ClientID, m.Identity, m.Name, ids)
			}
		}
		if s := nobody.state(); s != "failed" {
			t.Errorf("the page without a token is %q once the call connected", s)
		}
		screenshots(t, alice, bob)
	})

	phase(t, "an admin kick ends bob's call as kicked, and he does not join again", func(t *testing.T) {
		id := bob.clientID()
		if id == "" {
			t.Fatal("bob's page has no client id")
		}
		if a := adminDo(t, srv.endpoint, "DELETE", "/rooms/"+room+"/members/"+id, ""); a.Status != 204 {
			t.Fatalf("kick: %d %s", a.Status, a.Body)
		}
		bob.waitState(t, "ended", 20*time.Second)
		if e := bob.str(`document.documentElement.dataset.ended`); e != "kicked" {
			t.Errorf("bob's dataset.ended = %q, want kicked", e)
		}
		bob.waitFor(t, "the ended view", `!document.getElementById('ended-view').hidden`, 5*time.Second)
		alice.waitState(t, "waiting", 20*time.Second)
		// Bob's join token is good for an hour: only the page keeps him out.
		deadline := time.Now().Add(4 * time.Second)
		for time.Now().Before(deadline) {
			if s := bob.state(); s != "ended" {
				t.Fatalf("bob's page went from ended to %q after the kick", s)
			}
			r := inspect(t)
			if r.Occupants != 1 || len(r.Members) != 1 || r.Members[0].Identity != "alice-id" {
				t.Fatalf("the room after the kick: %+v, want alice alone", r)
			}
			time.Sleep(250 * time.Millisecond)
		}
		if s := alice.state(); s != "waiting" {
			t.Errorf("alice is %q after bob's kick, want waiting", s)
		}
		screenshots(t, alice, bob)
	})
}
