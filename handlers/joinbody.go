package handlers

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"unicode/utf8"
)

// maxPasswordBytes is the longest room password: bcrypt reads no further.
const maxPasswordBytes = 72

// parseJoinBody reads the body of a join: empty (or only whitespace), {},
// or {"password":"…"}, where a null password is none. Refusals: 400
// bad_request for a member other than "password", named, so that a
// misspelt "pasword" is not taken for no password, and for a password
// longer than 72 bytes; 400 bad_json for a body that is not one such JSON
// object (not UTF-8, not an object, a password that is not a string, a
// member given twice, anything after the object).
func parseJoinBody(body []byte) (password string, err error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return "", nil
	}
	if !utf8.Valid(body) {
		return "", errorf(400, "bad_json", "join body is not valid UTF-8")
	}
	badJSON := errorf(400, "bad_json", `join body must be empty, {} or {"password":"…"}`)
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", badJSON
	}
	seen := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", badJSON
		}
		key, _ := tok.(string) // inside an object a token here is its key
		if key != "password" {
			return "", errorf(400, "bad_request", `unknown member %.40q in the join body: the only one is "password"`, key)
		}
		if seen {
			return "", errorf(400, "bad_json", `member "password" appears twice`)
		}
		seen = true
		var p *string
		if err := dec.Decode(&p); err != nil {
			return "", errorf(400, "bad_json", `"password" must be a string`)
		}
		if p != nil {
			password = *p
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return "", badJSON
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return "", badJSON
	}
	if len(password) > maxPasswordBytes {
		return "", errorf(400, "bad_request", "password longer than %d bytes", maxPasswordBytes)
	}
	return password, nil
}
