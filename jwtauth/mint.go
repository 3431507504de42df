package jwtauth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// MintClaims are the claims of a join token to mint.
type MintClaims struct {
	// Subject is sub, the member's identity: required, at most MaxSubjectLen bytes.
	Subject string
	// Room is the room the token admits to, or "*" for any room: required.
	Room string
	// TTL is how long the token is valid from Now: required, positive.
	TTL time.Duration
	// Name is the optional display name, at most MaxNameLen characters.
	Name string
	// Metadata is optional JSON, at most MaxMetadataLen bytes when compact.
	Metadata json.RawMessage
	// Audience and Issuer, when set, become aud and iss.
	Audience, Issuer string
	// Now is the issue time (iat); the zero time means time.Now().
	Now time.Time
}

// Mint returns an HS256 join token signed with secret, for the
// `tincan token` command and tests. It refuses claims that Verify would
// refuse (no sub, no room, TTL not positive, too long, metadata not JSON or too
// large) and an empty secret.
func Mint(secret []byte, c MintClaims) (string, error) {
	return MintWith(secret, "HS256", "", c)
}

// MintWith returns a join token signed with key by alg (HS256/384/512 with a
// []byte secret; RS*, PS* with an *rsa.PrivateKey; ES* with an
// *ecdsa.PrivateKey of the matching curve; EdDSA with an
// ed25519.PrivateKey), with kid in the header when not empty. It checks the
// claims as Mint does.
func MintWith(key any, alg, kid string, c MintClaims) (string, error) {
	method := jwt.GetSigningMethod(alg)
	if method == nil || alg == jwt.SigningMethodNone.Alg() {
		return "", fmt.Errorf("jwtauth: cannot sign with algorithm %q", alg)
	}
	if b, ok := key.([]byte); ok && len(b) == 0 {
		return "", errors.New("jwtauth: empty secret")
	}
	switch {
	case c.Subject == "":
		return "", errors.New("jwtauth: a join token needs a subject")
	case len(c.Subject) > MaxSubjectLen:
		return "", fmt.Errorf("jwtauth: subject longer than %d bytes", MaxSubjectLen)
	case hasControl(c.Subject):
		return "", errors.New("jwtauth: subject contains a control character")
	case c.Room == "":
		return "", errors.New("jwtauth: a join token needs a room (or \"*\")")
	case c.TTL <= 0:
		return "", errors.New("jwtauth: a join token needs a positive TTL")
	case utf8.RuneCountInString(c.Name) > MaxNameLen:
		return "", fmt.Errorf("jwtauth: name longer than %d characters", MaxNameLen)
	case hasControl(c.Name):
		return "", errors.New("jwtauth: name contains a control character")
	}
	now := c.Now
	if now.IsZero() {
		now = time.Now()
	}
	claims := jwt.MapClaims{
		"sub":  c.Subject,
		"room": c.Room,
		"iat":  now.Unix(),
		"exp":  now.Add(c.TTL).Unix(),
	}
	if c.Name != "" {
		claims["name"] = c.Name
	}
	if len(c.Metadata) > 0 && string(c.Metadata) != "null" {
		var buf bytes.Buffer
		if err := json.Compact(&buf, c.Metadata); err != nil {
			return "", fmt.Errorf("jwtauth: metadata is not JSON: %w", err)
		}
		if buf.Len() > MaxMetadataLen {
			return "", fmt.Errorf("jwtauth: metadata is %d bytes, more than %d", buf.Len(), MaxMetadataLen)
		}
		claims["metadata"] = json.RawMessage(buf.Bytes())
	}
	if c.Audience != "" {
		claims["aud"] = c.Audience
	}
	if c.Issuer != "" {
		claims["iss"] = c.Issuer
	}
	t := jwt.NewWithClaims(method, claims)
	if kid != "" {
		t.Header["kid"] = kid
	}
	s, err := t.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("jwtauth: sign with %s: %w", alg, err)
	}
	return s, nil
}
