package main

// A join body says exactly what it means: a member other than "password"
// is refused and named, never ignored. Ignored, a misspelt "pasword" would
// make an unlocked room of one its author meant to lock, or a wrong guess
// of a locked one.

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestJoinBodyUnknownMembers(t *testing.T) {
	srv := newTestServer(t)
	detail := func(a answer) string {
		var p struct{ Detail string }
		a.json(t, &p)
		return p.Detail
	}

	t.Run("a misspelt password does not make an unlocked room", func(t *testing.T) {
		a := srv.do(t, "POST", "/rooms/meant-locked/join", `{"pasword":"sesame"}`)
		if a.Status != 400 || a.problem(t) != "bad_request" || !strings.Contains(detail(a), `"pasword"`) {
			t.Fatalf("%d %s; want 400 bad_request naming \"pasword\"", a.Status, a.Body)
		}
		if info := srv.roomInfo(t, "meant-locked"); info.Occupants != 0 {
			t.Fatalf("the refused join took a seat: %+v", info)
		}
		// Spelt right, it locks the room.
		if a := srv.do(t, "POST", "/rooms/meant-locked/join", `{"password":"sesame"}`); a.Status != 201 {
			t.Fatalf("join with the password: %d %s", a.Status, a.Body)
		}
		if a := srv.do(t, "POST", "/rooms/meant-locked/join", ""); a.Status != 403 || a.problem(t) != "password_required" {
			t.Fatalf("join without the password: %d %s; want 403 password_required", a.Status, a.Body)
		}
	})

	t.Run("a misspelt password is not a guess", func(t *testing.T) {
		if a := srv.do(t, "POST", "/rooms/vault/join", `{"password":"sesame"}`); a.Status != 201 {
			t.Fatalf("lock: %d %s", a.Status, a.Body)
		}
		// More refusals than -password-guesses (5) allows failures: none
		// of them counts, so the right password still gets in.
		for range 8 {
			a := srv.do(t, "POST", "/rooms/vault/join", `{"pasword":"sesame"}`)
			if a.Status != 400 || a.problem(t) != "bad_request" {
				t.Fatalf("%d %s; want 400 bad_request", a.Status, a.Body)
			}
		}
		if a := srv.do(t, "POST", "/rooms/vault/join", `{"password":"sesame"}`); a.Status != 201 {
			t.Fatalf("the right password after the refusals: %d %s", a.Status, a.Body)
		}
	})

	t.Run("every other member is refused and named", func(t *testing.T) {
		for _, tc := range []struct{ body, named string }{
			{`{"password":"x","room":"other"}`, `"room"`},
			{`{"Password":"x"}`, `"Password"`},
			{`{"token":"abc"}`, `"token"`},
			{`{"":null}`, `""`},
		} {
			a := srv.do(t, "POST", "/rooms/named/join", tc.body)
			if a.Status != 400 || a.problem(t) != "bad_request" || !strings.Contains(detail(a), tc.named) {
				t.Errorf("%s: %d %s; want 400 bad_request naming %s", tc.body, a.Status, a.Body, tc.named)
			}
		}
		if info := srv.roomInfo(t, "named"); info.Occupants != 0 {
			t.Fatalf("a refused join took a seat: %+v", info)
		}
	})

	t.Run("what the contract allows still joins", func(t *testing.T) {
		for i, body := range []string{"", "{}", ` { "password" : null } `} {
			a := srv.do(t, "POST", "/rooms/fine"+strings.Repeat("x", i)+"/join", body)
			var j joinAnswer
			if a.Status != 201 || json.Unmarshal(a.Body, &j) != nil || j.Token == "" {
				t.Errorf("%q: %d %s", body, a.Status, a.Body)
			}
		}
	})
}
