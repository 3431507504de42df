package handlers

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseJoinBody(t *testing.T) {
	for _, c := range []struct {
		body, password, code, detail string // detail: a part of it
	}{
		{"", "", "", ""},
		{" \r\n\t", "", "", ""},
		{"{}", "", "", ""},
		{` { "password" : "sesame" } `, "sesame", "", ""},
		{`{"password":null}`, "", "", ""},
		{`{"password":"` + strings.Repeat("p", 72) + `"}`, strings.Repeat("p", 72), "", ""},
		{`{"password":"\u00e9t\u00e9"}`, "été", "", ""},
		{`{"pasword":"sesame"}`, "", "bad_request", `"pasword"`},
		{`{"password":"sesame","room":"x"}`, "", "bad_request", `"room"`},
		{`{"Password":"sesame"}`, "", "bad_request", `"Password"`},
		{`{"":1}`, "", "bad_request", `""`},
		{`{"password":"` + strings.Repeat("p", 73) + `"}`, "", "bad_request", "72 bytes"},
		{`{"password":1}`, "", "bad_json", "string"},
		{`{"password":["a"]}`, "", "bad_json", "string"},
		{`{"password":"a","password":"b"}`, "", "bad_json", "twice"},
		{`{`, "", "bad_json", ""},
		{`{"password"}`, "", "bad_json", ""},
		{`{"password":"a"} {}`, "", "bad_json", ""},
		{`{"password":"a"}x`, "", "bad_json", ""},
		{`[]`, "", "bad_json", ""},
		{`"sesame"`, "", "bad_json", ""},
		{`null`, "", "bad_json", ""},
		{"{\"password\":\"\xff\"}", "", "bad_json", "UTF-8"},
	} {
		password, err := parseJoinBody([]byte(c.body))
		if c.code == "" {
			if err != nil || password != c.password {
				t.Errorf("%q: %q, %v; want %q", c.body, password, err, c.password)
			}
			continue
		}
		e, ok := err.(*apiError)
		if !ok || e.status != 400 || e.code != c.code || !strings.Contains(e.detail, c.detail) {
			t.Errorf("%q: %q, %v; want 400 %s with %s in its detail", c.body, password, err, c.code, c.detail)
		}
	}
}

// FuzzParseJoinBody checks parseJoinBody's promises on any input: it never
// panics, refuses only with a 400, and accepts only a body that is blank
// or a JSON object whose one member, if any, is a "password" string (or
// null) of at most 72 bytes, which it returns.
func FuzzParseJoinBody(f *testing.F) {
	for _, s := range []string{"", "{}", `{"password":"x"}`, `{"pasword":"x"}`, `{"password":null}`, `{"password":"a","password":"b"}`, `{"password":"a"} 1`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		password, err := parseJoinBody(body)
		if err != nil {
			if e, ok := err.(*apiError); !ok || e.status != 400 {
				t.Fatalf("error %v is not a 400", err)
			}
			return
		}
		if strings.TrimSpace(string(body)) == "" {
			if password != "" {
				t.Fatalf("a blank body gave password %q", password)
			}
			return
		}
		var members map[string]*string
		if err := json.Unmarshal(body, &members); err != nil || len(members) > 1 {
			t.Fatalf("accepted %q: %v, %d members", body, err, len(members))
		}
		p, ok := members["password"]
		if len(members) == 1 && !ok {
			t.Fatalf("accepted %q, whose member is not password", body)
		}
		if want := ""; p != nil {
			want = *p
			if password != want || len(password) > maxPasswordBytes {
				t.Fatalf("%q gave password %q, want %q", body, password, want)
			}
		}
	})
}
