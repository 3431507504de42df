package jwtauth

import (
	"bytes"
	"encoding/json"
	"math"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// Limits on the claims of a join token.
const (
	// MaxTokenLen bounds the whole token; longer is ReasonMalformed before any parsing.
	MaxTokenLen = 8 << 10
	// MaxSubjectLen bounds sub, in bytes.
	MaxSubjectLen = 256
	// MaxNameLen bounds name, in characters (runes).
	MaxNameLen = 128
	// MaxMetadataLen bounds metadata, in bytes of its compact JSON encoding.
	MaxMetadataLen = 1 << 10
	// maxNumericDate is 9999-12-31T23:59:59Z: exp and nbf must lie in [0, maxNumericDate].
	maxNumericDate = 253402300799
)

// Claims are the verified claims of a join token.
type Claims struct {
	// Subject is sub: the app's identity of the member, 1 to MaxSubjectLen bytes, no control characters.
	Subject string
	// Room is the room claim as signed: the room passed to Verify, or "*" (any room).
	Room string
	// Name is the optional display name, at most MaxNameLen characters, no control characters; "" when absent.
	Name string
	// Metadata is the optional metadata claim in compact JSON (at most
	// MaxMetadataLen bytes); nil when absent or null.
	Metadata json.RawMessage
	// ExpiresAt is exp.
	ExpiresAt time.Time
	// NotBefore is nbf; the zero time when absent.
	NotBefore time.Time
	// Issuer is iss ("" when absent); checked only when Config.Issuer is set.
	Issuer string
	// KeyID is the kid of the token's header ("" when absent).
	KeyID string
}

// wireClaims holds the claims as sent, so that each type problem gets its own
// Detail instead of one "could not decode" for the whole payload. It
// implements jwt.Claims for the library's exp/nbf/aud/iss checks.
type wireClaims struct {
	Exp      json.RawMessage `json:"exp"`
	Nbf      json.RawMessage `json:"nbf"`
	Iss      json.RawMessage `json:"iss"`
	Aud      json.RawMessage `json:"aud"`
	Sub      json.RawMessage `json:"sub"`
	Room     json.RawMessage `json:"room"`
	Name     json.RawMessage `json:"name"`
	Metadata json.RawMessage `json:"metadata"`
}

func absent(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

func numericDate(raw json.RawMessage, claim string) (*jwt.NumericDate, error) {
	if absent(raw) {
		return nil, nil
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, refuse(ReasonInvalidClaim, "%s is not a number of seconds since 1970", claim)
	}
	if math.IsNaN(f) || f < 0 || f > maxNumericDate {
		return nil, refuse(ReasonInvalidClaim, "%s is out of range (%s)", claim, raw)
	}
	sec, frac := math.Modf(f)
	return &jwt.NumericDate{Time: time.Unix(int64(sec), int64(frac*1e9)).UTC()}, nil
}

func optString(raw json.RawMessage, claim string) (string, error) {
	if absent(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", refuse(ReasonInvalidClaim, "%s is not a string", claim)
	}
	return s, nil
}

func (c *wireClaims) GetExpirationTime() (*jwt.NumericDate, error) { return numericDate(c.Exp, "exp") }
func (c *wireClaims) GetNotBefore() (*jwt.NumericDate, error)      { return numericDate(c.Nbf, "nbf") }
func (c *wireClaims) GetIssuedAt() (*jwt.NumericDate, error)       { return nil, nil } // iat is not checked
func (c *wireClaims) GetIssuer() (string, error)                   { return optString(c.Iss, "iss") }
func (c *wireClaims) GetSubject() (string, error)                  { return optString(c.Sub, "sub") }
func (c *wireClaims) GetAudience() (jwt.ClaimStrings, error) {
	if absent(c.Aud) {
		return nil, nil
	}
	var aud jwt.ClaimStrings
	if err := json.Unmarshal(c.Aud, &aud); err != nil {
		return nil, refuse(ReasonInvalidClaim, "aud is not a string or a list of strings")
	}
	return aud, nil
}

// appClaims checks tincan's own claims (sub, room, name, metadata) of a token
// whose signature and registered claims are already verified.
func (c *wireClaims) appClaims(room string) (Claims, error) {
	var out Claims
	if absent(c.Sub) {
		return out, refuse(ReasonMissingClaim, "the token has no sub claim (the member's identity is required)")
	}
	sub, err := optString(c.Sub, "sub")
	if err != nil {
		return out, err
	}
	switch {
	case sub == "":
		return out, refuse(ReasonMissingClaim, "the token's sub claim is empty (the member's identity is required)")
	case len(sub) > MaxSubjectLen:
		return out, refuse(ReasonInvalidClaim, "sub is %d bytes long, more than %d", len(sub), MaxSubjectLen)
	case hasControl(sub):
		return out, refuse(ReasonInvalidClaim, "sub contains a control character")
	}
	out.Subject = sub

	if absent(c.Room) {
		return out, refuse(ReasonMissingClaim, "the token has no room claim (a room name, or \"*\" for any room, is required)")
	}
	r, err := optString(c.Room, "room")
	if err != nil {
		return out, err
	}
	switch {
	case r == "":
		return out, refuse(ReasonMissingClaim, "the token's room claim is empty (a room name, or \"*\" for any room, is required)")
	case r != "*" && r != room:
		return out, refuse(ReasonWrongRoom, "the token is for room %s, not for room %s", quote(r), quote(room))
	}
	out.Room = r

	name, err := optString(c.Name, "name")
	if err != nil {
		return out, err
	}
	switch {
	case utf8.RuneCountInString(name) > MaxNameLen:
		return out, refuse(ReasonInvalidClaim, "name is %d characters long, more than %d", utf8.RuneCountInString(name), MaxNameLen)
	case hasControl(name):
		return out, refuse(ReasonInvalidClaim, "name contains a control character")
	}
	out.Name = name

	if !absent(c.Metadata) {
		var buf bytes.Buffer
		if err := json.Compact(&buf, c.Metadata); err != nil {
			// Unreachable: the payload already decoded as JSON.
			return out, refuse(ReasonInvalidClaim, "metadata is not valid JSON")
		}
		if buf.Len() > MaxMetadataLen {
			return out, refuse(ReasonInvalidClaim, "metadata is %d bytes of JSON, more than %d", buf.Len(), MaxMetadataLen)
		}
		out.Metadata = json.RawMessage(buf.Bytes())
	}
	return out, nil
}

func hasControl(s string) bool {
	for _, r := range s {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return true
		}
	}
	return false
}
