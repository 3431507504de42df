package jwtauth

import (
	"context"
	"crypto"
	"crypto/hmac"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// fuzzSecret is fixed so that the corpus stays meaningful between runs.
var fuzzSecret = []byte("fuzz-secret-0123456789abcdef0123")

// FuzzVerify: Verify never panics on client input, every refusal is an
// *Error, and nothing is admitted unless its signature is an HMAC of the
// first two segments under the configured secret with the header's HS alg.
func FuzzVerify(f *testing.F) {
	good, err := Mint(fuzzSecret, MintClaims{Subject: "u", Room: "lobby", TTL: time.Hour, Now: t0, Name: "n", Metadata: []byte(`{"a":[1,2]}`)})
	if err != nil {
		f.Fatal(err)
	}
	parts := strings.Split(good, ".")
	for _, seed := range []string{
		good, "", ".", "..", "...", "a.b.c", "opaque",
		parts[0] + "." + parts[1] + ".",
		rawToken(`{"alg":"none"}`, `{"sub":"u","room":"lobby","exp":9999999999}`, ""),
		rawToken(`{"alg":"HS256","kid":{}}`, `{}`, parts[2]),
		rawToken(`{"alg":"RS256"}`, `{"sub":"u"}`, "AAAA"),
		rawToken(`{"alg":"HS256"}`, `{"exp":1e309}`, "x"),
		rawToken(`{"alg":"HS256"}`, `{"sub":"u","room":"*","exp":9999999999,"metadata":`+strings.Repeat("[", 2000)+`}`, "x"),
		rawToken(`{"alg":"HS256"}`, `null`, "x"),
		rawToken(`{"alg":"EdDSA"}`, `{}`, ""),
	} {
		f.Add(seed, "lobby")
	}
	v, err := New(context.Background(), Config{Secrets: [][]byte{fuzzSecret}, Now: fixedNow, Logger: quietLogger()})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, token, room string) {
		c, err := v.Verify(context.Background(), token, room)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Reason == "" || e.Detail == "" {
				t.Fatalf("refusal not an *Error with reason and detail: %#v", err)
			}
			if len(e.Detail) > 600 {
				t.Fatalf("Detail of %d bytes", len(e.Detail))
			}
			return
		}
		p := strings.Split(token, ".")
		hdr, err := base64.RawURLEncoding.DecodeString(p[0])
		if err != nil {
			t.Fatalf("admitted a token whose header is not base64url: %q", token)
		}
		var h struct{ Alg string }
		if err := json.Unmarshal(hdr, &h); err != nil {
			t.Fatalf("admitted a token whose header is not JSON: %q", token)
		}
		var hash crypto.Hash
		switch h.Alg {
		case "HS256":
			hash = crypto.SHA256
		case "HS384":
			hash = crypto.SHA384
		case "HS512":
			hash = crypto.SHA512
		default:
			t.Fatalf("admitted alg %q: %q", h.Alg, token)
		}
		mac := hmac.New(hash.New, fuzzSecret)
		mac.Write([]byte(p[0] + "." + p[1]))
		sig, err := base64.RawURLEncoding.DecodeString(p[2])
		if err != nil || !hmac.Equal(sig, mac.Sum(nil)) {
			t.Fatalf("admitted a token not signed with the secret: %q", token)
		}
		if c.Subject == "" || (c.Room != "*" && c.Room != room) || c.ExpiresAt.IsZero() || len(c.Metadata) > MaxMetadataLen {
			t.Fatalf("admitted claims break the contract: %+v", c)
		}
	})
}
