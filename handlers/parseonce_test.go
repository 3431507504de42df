package handlers

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseMessageAsBefore holds the one-pass parser (parseValidMessage,
// issue 20) to the parser it replaced, kept below as the oracle: for any
// body, the same refusal (status, code and detail) or the same stored
// fields and recipient.
func FuzzParseMessageAsBefore(f *testing.F) {
	for _, s := range []string{
		`{"type":"offer","sdp":"v=0\r\n"}`, `{"type":"candidate","candidate":null}`, `{"type":"bye","id":5,"from":"x"}`,
		`{"type":"x","n":1.50,"to":"abc"}`, `{"type":"x","type":"y"}`, `[]`, `{`, `{"type":"X"}`, "{\"type\":\"x\",\"s\":\"\xff\"}",
		`{"type":"x"} 1`, `{"type":"answer","sdp":"v=0","nested":{"a":[1,{"b":null}]}}`,
		` { "type" : "x" , "a" : [ 1 , 2 , { "b" : "c d" } ] , "e" : true } `, `{"\u0074ype":"\u0061","t\"o":"q"}`,
		`{"type":"x","to":"\u00e9t\u00e9"}`, `{"type":"answer","sdp":"\u0076=0"}`, `{"type":"candidate","candidate":5}`,
		`{"type":"x","to":""}`, `{"type":"x","to":null}`, `{"type":"x","to":7}`, `{"type":"x","a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"a":18}`,
		`{"type":"x","a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"q":18}`,
		`{"id":1,"id":2,"type":"x"}`, `{"type":"x","s":"a\\\"b  c"}`, "{\"type\":\"x\",\t\"n\":\r\n-1.5e+3}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, gerr := parseMessage(body)
		want, werr := parseMessageBefore(body)
		if (gerr == nil) != (werr == nil) {
			t.Fatalf("%q: now %v, before %v", body, gerr, werr)
		}
		if gerr != nil {
			g, w := gerr.(*apiError), werr.(*apiError)
			if g.status != w.status || g.code != w.code || g.detail != w.detail {
				t.Fatalf("%q: now %d %s %q, before %d %s %q", body, g.status, g.code, g.detail, w.status, w.code, w.detail)
			}
			return
		}
		if got.to != want.to || !bytes.Equal(got.fields, want.fields) {
			t.Fatalf("%q: now to=%q %s, before to=%q %s", body, got.to, got.fields, want.to, want.fields)
		}
	})
}

// BenchmarkParseBatchPingpong is the body of the pingpong bench's posts
// (about 200 bytes), parsed as a post is.
func BenchmarkParseBatchPingpong(b *testing.B) {
	body := []byte(benchBody)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := parseBatch(body); err != nil {
			b.Fatal(err)
		}
	}
}

// parseMessageBefore is parseMessage as it was before issue 20 (commit
// 86da04d): the oracle of FuzzParseMessageAsBefore.
func parseMessageBefore(body []byte) (message, error) {
	var m message
	if !utf8.Valid(body) {
		return m, errorf(400, "bad_json", "body is not valid UTF-8")
	}
	if !json.Valid(body) {
		return m, errorf(400, "bad_json", "body is not valid JSON")
	}
	i := skipSpace(body, 0)
	if body[i] != '{' {
		return m, errorf(400, "bad_json", "body must be a JSON object")
	}
	out := bytes.NewBuffer(make([]byte, 0, len(body)))
	seen := make(map[string]bool, 8)
	values := make(map[string][]byte, 4) // the members checked below
	for i = skipSpace(body, i+1); body[i] != '}'; {
		keyEnd := stringEnd(body, i)
		rawKey := body[i:keyEnd]
		key := string(rawKey[1 : len(rawKey)-1])
		if bytes.IndexByte(rawKey, '\\') >= 0 {
			json.Unmarshal(rawKey, &key) // valid JSON: cannot fail
		}
		i = skipSpace(body, skipSpace(body, keyEnd)+1) // past the colon
		valueEnd := valueEnd(body, i)
		raw := body[i:valueEnd]
		if i = skipSpace(body, valueEnd); body[i] == ',' {
			i = skipSpace(body, i+1)
		}
		if seen[key] {
			return m, errorf(400, "bad_json", "member %.40q appears twice", key)
		}
		seen[key] = true
		switch key {
		case "id", "from":
			continue // the server's own
		case "type", "sdp", "candidate", "to":
			values[key] = raw
		}
		if out.Len() > 0 {
			out.WriteByte(',')
		}
		out.Write(rawKey)
		out.WriteByte(':')
		json.Compact(out, raw) // valid JSON: cannot fail
	}

	var typ string
	if json.Unmarshal(values["type"], &typ) != nil || !validType(typ) {
		return m, errorf(400, "bad_message", `"type" must be a string matching ^[a-z][a-z0-9_.-]{0,31}$`)
	}
	switch typ {
	case "offer", "answer":
		var sdp string
		raw := values["sdp"]
		plain := bytes.HasPrefix(raw, []byte(`"v=0`)) // no need to decode a whole SDP
		if !plain && (json.Unmarshal(raw, &sdp) != nil || !strings.HasPrefix(sdp, "v=0")) {
			return m, errorf(400, "bad_message", `%s must carry a string "sdp" that starts with v=0`, typ)
		}
	case "candidate":
		raw, ok := values["candidate"]
		var c *string
		if !ok || json.Unmarshal(raw, &c) != nil {
			return m, errorf(400, "bad_message", `candidate must carry "candidate": a string, or null for end-of-candidates`)
		}
	}
	if raw, ok := values["to"]; ok && string(raw) != "null" {
		if json.Unmarshal(raw, &m.to) != nil || m.to == "" {
			return m, errorf(400, "bad_message", `"to" must be a client id`)
		}
	}
	m.fields = out.Bytes()
	return m, nil
}
