package jwtauth

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Reasons of an *Error: a short, stable code for programs (metrics labels, an
// answer's "reason" field). Detail is for people and may change wording.
const (
	// ReasonMalformed: not a JWT (segments, base64, JSON, header fields of the wrong type) or longer than MaxTokenLen.
	ReasonMalformed = "malformed"
	// ReasonExpired: exp (plus the leeway) has passed.
	ReasonExpired = "expired"
	// ReasonNotYetValid: nbf (minus the leeway) is still ahead.
	ReasonNotYetValid = "not_yet_valid"
	// ReasonBadSignature: the signature matches none of the keys that could have made it.
	ReasonBadSignature = "bad_signature"
	// ReasonUnknownKey: the token names a kid that no configured key or JWKS key has, even after a refetch.
	ReasonUnknownKey = "unknown_kid"
	// ReasonAlgorithm: the token's alg is none, unknown, or not one the configured keys allow.
	ReasonAlgorithm = "algorithm_not_allowed"
	// ReasonAudience: Config.Audience is set and aud is missing or does not contain it.
	ReasonAudience = "wrong_audience"
	// ReasonIssuer: Config.Issuer is set and iss is missing or different.
	ReasonIssuer = "wrong_issuer"
	// ReasonMissingClaim: sub, room or exp is absent (or sub, room empty).
	ReasonMissingClaim = "missing_claim"
	// ReasonInvalidClaim: a claim has the wrong type, is too long, too large or out of range.
	ReasonInvalidClaim = "invalid_claim"
	// ReasonWrongRoom: the room claim is neither the room being joined nor "*".
	ReasonWrongRoom = "wrong_room"
)

// Error is the only error Verify returns. Reason is one of the Reason
// constants; Detail says, in one human readable sentence, exactly which
// problem the token has (e.g. "the token expired at 2026-12-06T10:00:00Z").
// Detail never contains key material; values copied from the token are quoted
// and shortened. It is meant to be shown to the client that sent the token.
type Error struct {
	Reason string
	Detail string
}

// Error returns "join token refused: " followed by Detail.
func (e *Error) Error() string { return "join token refused: " + e.Detail }

func refuse(reason, format string, args ...any) *Error {
	return &Error{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// quote renders a value from the token for a Detail: quoted, escaped and cut
// to 64 runes so that a hostile token cannot make an error message large.
func quote(s string) string {
	const max = 64
	if utf8.RuneCountInString(s) > max {
		r := []rune(s)
		return fmt.Sprintf("%q…", string(r[:max]))
	}
	return fmt.Sprintf("%q", s)
}

func quoteList(ss []string) string {
	q := make([]string, 0, len(ss))
	for i, s := range ss {
		if i == 8 {
			q = append(q, "…")
			break
		}
		q = append(q, quote(s))
	}
	return "[" + strings.Join(q, ", ") + "]"
}
