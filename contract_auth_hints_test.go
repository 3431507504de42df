package main

// A refused token says where the token goes. An EventSource cannot send
// headers, so the GET calls (and leave) take ?token= as well as the
// Authorization header, and their 401s say so; a post, which takes only
// the header, says that instead.

import (
	"strings"
	"testing"
)

func TestAuthErrorsSayWhereTheTokenGoes(t *testing.T) {
	srv := newTestServer(t)
	a := srv.join(t, "hints", 201)
	detail := func(ans answer) string {
		t.Helper()
		if ans.Status != 401 || ans.problem(t) != "unauthorized" {
			t.Fatalf("%d %s, want 401 unauthorized", ans.Status, ans.Body)
		}
		var p struct{ Detail string }
		ans.json(t, &p)
		return p.Detail
	}

	for _, tc := range []struct{ method, path string }{
		{"GET", "/rooms/hints/events"},
		{"GET", "/rooms/hints/messages?wait=0"},
		{"GET", "/ice-servers"},
		{"POST", "/rooms/hints/leave"},
	} {
		sep := "?"
		if strings.Contains(tc.path, "?") {
			sep = "&"
		}
		for name, ans := range map[string]answer{
			"no token":                    srv.do(t, tc.method, tc.path, ""),
			"an unknown token":            srv.do(t, tc.method, tc.path+sep+"token=nope", ""),
			"an unknown Bearer token":     srv.do(t, tc.method, tc.path, "", "Authorization", "Bearer nope"),
			"Basic credentials, no query": srv.do(t, tc.method, tc.path, "", "Authorization", "Basic dXNlcjpwYXNz"),
		} {
			if d := detail(ans); !strings.Contains(d, "?token=") || !strings.Contains(d, "Authorization: Bearer") {
				t.Errorf("%s %s with %s: detail %q does not name both the header and ?token=", tc.method, tc.path, name, d)
			}
		}
	}

	t.Run("a post says that it takes the header only", func(t *testing.T) {
		d := detail(srv.do(t, "POST", "/rooms/hints/messages?token="+a.Token, `{"type":"bye"}`))
		if !strings.Contains(d, "Authorization: Bearer") || !strings.Contains(d, "only by GET") {
			t.Errorf("post with ?token=: detail %q", d)
		}
		d = detail(srv.do(t, "POST", "/rooms/hints/messages", `{"type":"bye"}`))
		if !strings.Contains(d, "Authorization: Bearer") || strings.Contains(d, "?token=") {
			t.Errorf("post without a token: detail %q, which must not offer ?token=", d)
		}
	})

	t.Run("Basic credentials for a proxy leave the query token to work", func(t *testing.T) {
		// A browser sends the credentials of an auth_basic proxy on every
		// request, the EventSource's too.
		s := a.events(t, "", "Authorization", "Basic dXNlcjpwYXNz")
		s.ready(t)
		if ans := srv.do(t, "GET", "/rooms/hints/messages?wait=0&token="+a.Token, "", "Authorization", "Basic dXNlcjpwYXNz"); ans.Status != 200 {
			t.Fatalf("poll with Basic credentials and ?token=: %d %s", ans.Status, ans.Body)
		}
	})
}
