package jwtauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// t0 is the tests' clock: every verifier runs on a fixed or stepped clock.
var t0 = time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)

func fixedNow() time.Time { return t0 }

// clock is a settable clock for the refetch tests.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock      { c := &clock{}; c.ns.Store(t.UnixNano()); return c }
func (c *clock) Now() time.Time        { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Add(d time.Duration)   { c.ns.Add(int64(d)) }
func quietLogger() *slog.Logger        { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
func randomSecret(t testing.TB) []byte { b := make([]byte, 32); rand.Read(b); return b }

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

// testRSA returns one 2048-bit key per test binary (generation is slow).
func testRSA(t testing.TB) *rsa.PrivateKey {
	rsaOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		rsaKey = k
	})
	return rsaKey
}

func testEC(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testEd(t testing.TB) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// pemFile writes pub as a PUBLIC KEY PEM file in t.TempDir and returns its path.
func pemFile(t testing.TB, pub crypto.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func writeFile(t testing.TB, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), fmt.Sprintf("key%d.pem", time.Now().UnixNano()))
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// claims are valid base claims at t0 for room "lobby".
func claims() jwt.MapClaims {
	return jwt.MapClaims{
		"sub":  "user-1",
		"room": "lobby",
		"exp":  t0.Add(time.Hour).Unix(),
		"iat":  t0.Unix(),
	}
}

// sign signs arbitrary claims; key is a secret or a private key.
func sign(t testing.TB, key any, alg, kid string, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.GetSigningMethod(alg), c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rawToken assembles a token from a header and payload JSON and a signature.
func rawToken(header, payload, sig string) string {
	e := base64.RawURLEncoding.EncodeToString
	return e([]byte(header)) + "." + e([]byte(payload)) + "." + sig
}

func mustNew(t testing.TB, cfg Config) *Verifier {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = fixedNow
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	v, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// wantRefusal checks that err is an *Error with reason and a Detail containing detail.
func wantRefusal(t testing.TB, err error, reason, detail string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("got %v (%T), want an *Error %s", err, err, reason)
	}
	if e.Reason != reason || !strings.Contains(e.Detail, detail) {
		t.Fatalf("got %s: %q, want %s containing %q", e.Reason, e.Detail, reason, detail)
	}
}

// jwksServer is a real JWKS endpoint on 127.0.0.1 that counts its requests
// and can be told to fail.
type jwksServer struct {
	*httptest.Server
	requests atomic.Int64
	fail     atomic.Bool
	mu       sync.Mutex
	body     []byte
}

func newJWKSServer(t testing.TB, keys ...map[string]any) *jwksServer {
	s := &jwksServer{}
	s.setKeys(t, keys...)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		if s.fail.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		s.mu.Lock()
		body := s.body
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) setKeys(t testing.TB, keys ...map[string]any) {
	body, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.body = body
	s.mu.Unlock()
}

// toJWK renders a public key as a JWK with kid.
func toJWK(t testing.TB, pub crypto.PublicKey, kid string) map[string]any {
	e := base64.RawURLEncoding.EncodeToString
	switch p := pub.(type) {
	case *rsa.PublicKey:
		return map[string]any{"kty": "RSA", "kid": kid, "use": "sig", "n": e(p.N.Bytes()), "e": e(big.NewInt(int64(p.E)).Bytes())}
	case *ecdsa.PublicKey:
		size := (p.Curve.Params().BitSize + 7) / 8
		raw, err := p.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		return map[string]any{"kty": "EC", "kid": kid, "crv": p.Curve.Params().Name, "x": e(raw[1 : 1+size]), "y": e(raw[1+size:])}
	case ed25519.PublicKey:
		return map[string]any{"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": e(p)}
	}
	t.Fatalf("no JWK for %T", pub)
	return nil
}
