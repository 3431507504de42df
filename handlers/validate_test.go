package handlers

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	roomRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	typeRE = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,31}$`)
)

func FuzzValidRoom(f *testing.F) {
	for _, s := range []string{"abc", "", "a-b_C9", strings.Repeat("x", 64), strings.Repeat("x", 65), "a/b", "é", "a b", "..", "%2e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := validRoom(s), roomRE.MatchString(s); got != want {
			t.Fatalf("validRoom(%q) = %v, regexp says %v", s, got, want)
		}
	})
}

func FuzzParseCursor(f *testing.F) {
	for _, s := range []string{"", "0", "17", "007", "-1", "1.5", "abc", "18446744073709551615", "9223372036854775807", "9223372036854775808", " 1", "+1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseCursor(s)
		if err != nil {
			if _, ok := err.(*apiError); !ok || err.(*apiError).status != 400 {
				t.Fatalf("parseCursor(%q): error %v is not a 400", s, err)
			}
			return
		}
		if s == "" {
			if n != 0 {
				t.Fatalf("empty cursor = %d", n)
			}
			return
		}
		if trimmed := strings.TrimLeft(s, "0"); strconv.FormatUint(n, 10) != trimmed && !(n == 0 && trimmed == "") {
			t.Fatalf("parseCursor(%q) = %d", s, n)
		}
	})
}

// The contract's wait: the default when absent, 0 never waits, fractions
// allowed, above the maximum counts as the maximum; anything else is 400.
func TestParseWait(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 25 * time.Second, true},
		{"0", 0, true},
		{"0.2", 200 * time.Millisecond, true},
		{"25", 25 * time.Second, true},
		{"60", 60 * time.Second, true},
		{"61", 60 * time.Second, true},
		{"1e9", 60 * time.Second, true},
		{"-1", 0, false},
		{"x", 0, false},
		{"NaN", 0, false},
	} {
		got, err := parseWait(tc.in, 25*time.Second, 60*time.Second)
		if (err == nil) != tc.ok || tc.ok && got != tc.want {
			t.Errorf("parseWait(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseWait(f *testing.F) {
	for _, s := range []string{"", "0", "0.5", "25", "61", "1e9", "NaN", "Inf", "-1", "x", "1e-400"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseWait(s, 25*time.Second, 60*time.Second)
		if err == nil && (d < 0 || d > 60*time.Second) {
			t.Fatalf("parseWait(%q) = %v, outside [0, 60s]", s, d)
		}
	})
}

// FuzzParseMessage checks parseMessage's promises on any input: it never
// panics; what it accepts re-forms a JSON object with a valid type, no id and
// no from, whose values equal the posted ones.
func FuzzParseMessage(f *testing.F) {
	for _, s := range []string{
		`{"type":"offer","sdp":"v=0\r\n"}`, `{"type":"candidate","candidate":null}`, `{"type":"bye","id":5,"from":"x"}`,
		`{"type":"x","n":1.50,"to":"abc"}`, `{"type":"x","type":"y"}`, `[]`, `{`, `{"type":"X"}`, "{\"type\":\"x\",\"s\":\"\xff\"}",
		`{"type":"x"} 1`, `{"type":"answer","sdp":"v=0","nested":{"a":[1,{"b":null}]}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := parseMessage(body)
		if err != nil {
			if e, ok := err.(*apiError); !ok || e.status != 400 {
				t.Fatalf("error %v is not a 400", err)
			}
			return
		}
		obj := append(append([]byte("{"), m.fields...), '}')
		var got map[string]json.RawMessage
		if err := json.Unmarshal(obj, &got); err != nil {
			t.Fatalf("accepted %q but re-formed invalid JSON %q: %v", body, obj, err)
		}
		if _, ok := got["id"]; ok {
			t.Fatalf("id kept: %s", obj)
		}
		if _, ok := got["from"]; ok {
			t.Fatalf("from kept: %s", obj)
		}
		var typ string
		if json.Unmarshal(got["type"], &typ) != nil || !typeRE.MatchString(typ) {
			t.Fatalf("accepted type %s", got["type"])
		}
		var posted map[string]json.RawMessage
		if err := json.Unmarshal(body, &posted); err != nil {
			t.Fatalf("accepted a body that is not an object: %q", body)
		}
		for k, v := range got {
			var a, b bytes.Buffer
			json.Compact(&a, v)
			json.Compact(&b, posted[k])
			if a.String() != b.String() {
				t.Fatalf("member %q changed: %s -> %s", k, posted[k], v)
			}
		}
	})
}

func BenchmarkParseMessage(b *testing.B) {
	offer := []byte(`{"type":"offer","sdp":"v=0\r\n` + strings.Repeat(`a=candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host\r\n`, 60) + `","sid":"A-1234"}`)
	candidate := []byte(`{"type":"candidate","candidate":"candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host","sdpMid":"0","sdpMLineIndex":0}`)
	for _, c := range []struct {
		name string
		body []byte
	}{{"offer", offer}, {"candidate", candidate}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.body)))
			for b.Loop() {
				if _, err := parseMessage(c.body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzParseBatch checks parseBatch's promises on any input: it never
// panics, refuses with a 400, and accepts an object as one message or an
// array of 1..64 objects each of which parseMessage accepts alone, in
// order.
func FuzzParseBatch(f *testing.F) {
	for _, s := range []string{
		`{"type":"bye"}`, `[{"type":"candidate","candidate":"a"},{"type":"candidate","candidate":null}]`, `[]`, ` [ {"type":"x"} ] `,
		`[{"type":"x"},1]`, `[{"type":"x"},{"type":"X"}]`, `[[{"type":"x"}]]`, `[{"type":"x","to":"abc"},{"type":"y"}]`, `[`, `[{"type":"x"}] 1`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		msgs, batch, err := parseBatch(body)
		if err != nil {
			if e, ok := err.(*apiError); !ok || e.status != 400 {
				t.Fatalf("error %v is not a 400", err)
			}
			return
		}
		if !batch {
			if len(msgs) != 1 {
				t.Fatalf("an object gave %d messages", len(msgs))
			}
			return
		}
		var elems []json.RawMessage
		if err := json.Unmarshal(body, &elems); err != nil || len(elems) != len(msgs) || len(msgs) < 1 || len(msgs) > maxBatch {
			t.Fatalf("accepted %q as %d messages (%v)", body, len(msgs), err)
		}
		for i, el := range elems {
			m, err := parseMessage(el)
			if err != nil || m.to != msgs[i].to || !bytes.Equal(m.fields, msgs[i].fields) {
				t.Fatalf("element %d %s: alone %+v, %v; in the batch %+v", i, el, m, err, msgs[i])
			}
		}
	})
}

func TestParseBatchNamesTheIndex(t *testing.T) {
	_, _, err := parseBatch([]byte(`[{"type":"candidate","candidate":"a"},{"type":"candidate","candidate":"b"},{"type":"offer","sdp":"nope"}]`))
	if e, ok := err.(*apiError); !ok || e.status != 400 || e.code != "bad_message" || !strings.HasPrefix(e.detail, "message 2: ") {
		t.Fatalf("a bad third element: %v; want 400 bad_message naming message 2", err)
	}
	big := "[" + strings.Repeat(`{"type":"x"},`, maxBatch) + `{"type":"x"}]`
	if _, _, err := parseBatch([]byte(big)); err == nil {
		t.Fatalf("a batch of %d accepted", maxBatch+1)
	}
}
