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
func validType(t string) bool {
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
// It checks the body with json.Valid once, then splits the object's
// members with a scanner that may assume valid JSON.
func parseMessage(body []byte) (message, error) {
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

// The scanners below assume valid JSON (checked first): they find where a
// token ends without validating it.

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// stringEnd returns the index just past the string that starts at b[i].
func stringEnd(b []byte, i int) int {
	for j := i + 1; ; j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
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
