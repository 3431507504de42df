package handlers

import (
	"strings"
	"testing"
)

func TestParseAdminPage(t *testing.T) {
	for _, c := range []struct {
		after, limit string
		wantAfter    string
		wantLimit    int
		ok           bool
	}{
		{"", "", "", adminPageDefault, true},
		{"abc", "1", "abc", 1, true},
		{"a-b_c", "1000", "a-b_c", 1000, true},
		{"", "0", "", 0, false},
		{"", "1001", "", 0, false},
		{"", "-1", "", 0, false},
		{"", "1e3", "", 0, false},
		{"", " 5", "", 0, false},
		{"no room", "", "", 0, false},
		{strings.Repeat("a", 65), "", "", 0, false},
	} {
		after, limit, err := parseAdminPage(c.after, c.limit)
		if (err == nil) != c.ok || c.ok && (after != c.wantAfter || limit != c.wantLimit) {
			t.Errorf("parseAdminPage(%q, %q) = %q, %d, %v", c.after, c.limit, after, limit, err)
		}
	}
}

// FuzzParseAdminPage: whatever a caller puts in ?after= and ?limit=, the
// answer is a room name and a page size within bounds, or a 400.
func FuzzParseAdminPage(f *testing.F) {
	for _, seed := range [][2]string{{"", ""}, {"abc", "10"}, {"x", "1000"}, {"%2F", "0"}, {"a b", "-5"}, {"", "99999999999999999999"}} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, after, limit string) {
		a, n, err := parseAdminPage(after, limit)
		if err != nil {
			if e, ok := err.(*apiError); !ok || e.status != 400 || e.code != "bad_request" {
				t.Fatalf("refusal %#v, want a 400 bad_request", err)
			}
			return
		}
		if n < 1 || n > adminPageMax || a != after || a != "" && !validRoom(a) {
			t.Fatalf("parseAdminPage(%q, %q) = %q, %d", after, limit, a, n)
		}
	})
}
