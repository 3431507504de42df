package handlers

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The checks and parsers of client input, fuzzed in validate_test.go.

// validRoom: ^[A-Za-z0-9_-]{1,64}$
func validRoom(name string) bool {
	if len(name) < 1 || len(name) > 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// validType: ^[a-z][a-z0-9_.-]{0,31}$
func validType[T string | []byte](t T) bool {
	if len(t) < 1 || len(t) > 32 || t[0] < 'a' || t[0] > 'z' {
		return false
	}
	for i := 1; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// parseCursor reads a message id: decimal digits that fit in 63 bits.
// "" means 0.
func parseCursor(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	if len(s) > 19 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, errorf(400, "bad_request", "cursor %.32q is not a message id", s)
	}
	n, err := strconv.ParseUint(s, 10, 63)
	if err != nil {
		return 0, errorf(400, "bad_request", "cursor %.32q is not a message id", s)
	}
	return n, nil
}

// parseWait reads the long-poll wait in seconds (fractions allowed), with a
// default, and caps it.
func parseWait(s string, def, maxWait time.Duration) (time.Duration, error) {
	if s == "" {
		return min(def, maxWait), nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || f < 0 || len(s) > 32 {
		return 0, errorf(400, "bad_request", "wait %.32q is not a number of seconds", s)
	}
	if f >= maxWait.Seconds() {
		return maxWait, nil
	}
	return time.Duration(f * float64(time.Second)), nil
}

// message is a validated post.
type message struct {
	to     string
	fields []byte // members without braces, "id" and "from" removed, compacted
}

// parseMessage validates a posted message per the API contract and returns
// its members in their original order with values byte-for-byte as posted
// (only whitespace between tokens is dropped, so numbers keep their digits).
func parseMessage(body []byte) (message, error) {
	if !utf8.Valid(body) {
		return message{}, errorf(400, "bad_json", "body is not valid UTF-8")
	}
	if !validJSON(body) {
		return message{}, errorf(400, "bad_json", "body is not valid JSON")
	}
	return parseValidMessage(body)
}

// maxCheckedMembers bounds the members whose names are remembered on the
// stack to find one that appears twice; a message with more (rare) takes a
// map.
const maxCheckedMembers = 16

// parseValidMessage is parseMessage for a body already known to be valid
// UTF-8 and valid JSON: parseBatch checks the whole body once, and each
// message is then read in one pass that splits its members, compacts them
// and decodes only what it checks. It serves issue 20's target (the POST
// body parsed once, BENCHMARKS §11): checking and compacting bodies with
// encoding/json's scanner, several times over, was ~8.5 % of the server's
// instructions per message.
func parseValidMessage(body []byte) (message, error) {
	var m message
	i := skipSpace(body, 0)
	if body[i] != '{' {
		return m, errorf(400, "bad_json", "body must be a JSON object")
	}
	out := make([]byte, 0, len(body))
	var (
		names  [maxCheckedMembers][]byte // raw names seen, as posted
		n      int
		more   map[string]bool // past maxCheckedMembers: decoded names
		values struct{ typ, sdp, candidate, to []byte }
		seen   struct{ typ, sdp, candidate, to bool }
	)
	for i = skipSpace(body, i+1); body[i] != '}'; {
		keyEnd := stringEnd(body, i)
		rawKey := body[i:keyEnd]
		key := rawKey[1 : len(rawKey)-1]
		if bytes.IndexByte(rawKey, '\\') >= 0 {
			var k string
			json.Unmarshal(rawKey, &k) // valid JSON: cannot fail
			key = []byte(k)
		}
		i = skipSpace(body, skipSpace(body, keyEnd)+1) // past the colon
		valueEnd := valueEnd(body, i)
		raw := body[i:valueEnd]
		if i = skipSpace(body, valueEnd); body[i] == ',' {
			i = skipSpace(body, i+1)
		}
		if twice(names[:n], &more, key) {
			return m, errorf(400, "bad_json", "member %.40q appears twice", string(key))
		}
		if n < len(names) {
			names[n] = key
			n++
		}
		switch string(key) {
		case "id", "from":
			continue // the server's own
		case "type":
			values.typ, seen.typ = raw, true
		case "sdp":
			values.sdp, seen.sdp = raw, true
		case "candidate":
			values.candidate, seen.candidate = raw, true
		case "to":
			values.to, seen.to = raw, true
		}
		if len(out) > 0 {
			out = append(out, ',')
		}
		out = append(append(out, rawKey...), ':')
		out = appendCompact(out, raw)
	}

	typ, ok := jsonString(values.typ)
	if !ok || !validType(typ) {
		return m, errorf(400, "bad_message", `"type" must be a string matching ^[a-z][a-z0-9_.-]{0,31}$`)
	}
	switch string(typ) {
	case "offer", "answer":
		if bytes.HasPrefix(values.sdp, []byte(`"v=0`)) {
			break // no need to decode a whole SDP
		}
		if sdp, ok := jsonString(values.sdp); !ok || !bytes.HasPrefix(sdp, []byte("v=0")) {
			return m, errorf(400, "bad_message", `%s must carry a string "sdp" that starts with v=0`, typ)
		}
	case "candidate":
		if c := values.candidate; !seen.candidate || c[0] != '"' && string(c) != "null" {
			return m, errorf(400, "bad_message", `candidate must carry "candidate": a string, or null for end-of-candidates`)
		}
	}
	if raw := values.to; seen.to && string(raw) != "null" {
		to, ok := jsonString(raw)
		if !ok || len(to) == 0 {
			return m, errorf(400, "bad_message", `"to" must be a client id`)
		}
		m.to = string(to)
	}
	m.fields = out
	return m, nil
}

// twice reports whether name is among the names seen so far (held in
// names, then in *more once names is full), and remembers it.
func twice(names [][]byte, more *map[string]bool, name []byte) bool {
	for _, seen := range names {
		if bytes.Equal(seen, name) {
			return true
		}
	}
	if len(names) < maxCheckedMembers {
		return false // the caller keeps it in names
	}
	if *more == nil {
		*more = make(map[string]bool)
	}
	if (*more)[string(name)] {
		return true
	}
	(*more)[string(name)] = true
	return false
}

// jsonString decodes a valid JSON value that should be a string: its
// bytes without quotes when it has no escapes, else decoded. ok is false
// for a value that is no string.
func jsonString(raw []byte) (s []byte, ok bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return nil, false
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw[1 : len(raw)-1], true
	}
	var d string
	if json.Unmarshal(raw, &d) != nil {
		return nil, false
	}
	return []byte(d), true
}

// appendCompact appends the valid JSON value raw without the whitespace
// between its tokens (json.Compact's output, without its second scan).
func appendCompact(dst, raw []byte) []byte {
	if c := raw[0]; c != '{' && c != '[' {
		return append(dst, raw...) // a string, number or literal holds no whitespace
	}
	for i := 0; i < len(raw); {
		switch c := raw[i]; c {
		case ' ', '\t', '\r', '\n':
			i++
		case '"':
			end := stringEnd(raw, i)
			dst = append(dst, raw[i:end]...)
			i = end
		default:
			j := i + 1
			for j < len(raw) && raw[j] != '"' && raw[j] != ' ' && raw[j] != '\t' && raw[j] != '\r' && raw[j] != '\n' {
				j++
			}
			dst = append(dst, raw[i:j]...)
			i = j
		}
	}
	return dst
}

// The scanners below assume valid JSON (checked first): they find where a
// token ends without validating it.

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// stringEnd returns the index just past the string that starts at b[i]:
// the first quote with no backslash before it since the last escape,
// found with bytes.IndexByte rather than a byte at a time.
func stringEnd(b []byte, i int) int {
	for j := i + 1; ; {
		q := j + bytes.IndexByte(b[j:], '"')
		bs := bytes.IndexByte(b[j:q], '\\')
		if bs < 0 {
			return q + 1
		}
		j += bs + 2 // past the backslash and the character it escapes
	}
}

// valueEnd returns the index just past the value that starts at b[i].
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; ; j++ {
			switch b[j] {
			case '"':
				j = stringEnd(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1
				}
			}
		}
	default: // number, true, false, null
		j := i
		for j < len(b) && strings.IndexByte(",}] \t\r\n", b[j]) < 0 {
			j++
		}
		return j
	}
}

// readBody reads at most limit bytes of the request body. Refusals: 413
// too_large past limit; 408 request_timeout when the body did not arrive
// within the body deadline (limitBodyTime), and then the answer closes the
// connection, whose next bytes would be the rest of the body.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, errorf(413, "too_large", "body is larger than %d bytes", limit)
	}
	if err != nil && bodyTimedOut(err) {
		w.Header().Set("Connection", "close")
		return nil, errorf(408, "request_timeout", "the request body did not arrive in time")
	}
	if err != nil {
		return nil, errorf(400, "bad_request", "reading body: %v", err)
	}
	return body, nil
}
