package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The flags of an application in control, through run: asymmetric keys
// from a PEM file and from a JWKS admit their tokens, tincan token mints
// one the server admits, and settings that cannot work are refused at start.

func TestJoinTokenKeys(t *testing.T) {
	dir := t.TempDir()
	writePEM := func(name string, pub any) string {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	sign := func(method jwt.SigningMethod, key any, kid, sub string) string {
		tok := jwt.NewWithClaims(method, joinClaims("keys", sub, ""))
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	t.Run("PEM files", func(t *testing.T) {
		srv := newTestServer(t, withFlags("-auth", "jwt", "-jwt-public-key", writePEM("ec.pem", &ec.PublicKey), "-jwt-public-key", writePEM("ed.pem", edPub)))
		jwtJoin(t, srv.endpoint, "keys", sign(jwt.SigningMethodES256, ec, "", "es"), 201)
		jwtJoin(t, srv.endpoint, "keys", sign(jwt.SigningMethodEdDSA, edPriv, "", "ed"), 201)
		// An HS256 token signed with the PEM file's bytes as its secret.
		pemBytes, _ := os.ReadFile(filepath.Join(dir, "ec.pem"))
		a := srv.do(t, "POST", "/rooms/keys/join", "", "Authorization", "Bearer "+sign(jwt.SigningMethodHS256, pemBytes, "", "mallory"))
		if a.Status != 401 || a.problem(t) != "bad_jwt" {
			t.Fatalf("alg confusion: %d %s", a.Status, a.Body)
		}
	})

	t.Run("JWKS", func(t *testing.T) {
		b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
		pad := func(n *big.Int) []byte { return n.FillBytes(make([]byte, 32)) }
		set, _ := json.Marshal(map[string]any{"keys": []map[string]string{
			{"kty": "EC", "crv": "P-256", "kid": "ec-1", "x": b64(pad(ec.X)), "y": b64(pad(ec.Y))},
			{"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "x": b64(edPub)},
		}})
		jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(set)
		}))
		t.Cleanup(jwks.Close)
		srv := newTestServer(t, withEnv("TINCAN_AUTH", "jwt"), withEnv("TINCAN_JWT_JWKS_URL", jwks.URL))
		jwtJoin(t, srv.endpoint, "keys", sign(jwt.SigningMethodES256, ec, "ec-1", "es"), 201)
		jwtJoin(t, srv.endpoint, "keys", sign(jwt.SigningMethodEdDSA, edPriv, "ed-1", "ed"), 201)
		a := srv.do(t, "POST", "/rooms/keys/join", "", "Authorization", "Bearer "+sign(jwt.SigningMethodES256, ec, "nobody", "x"))
		if a.Status != 401 || a.problem(t) != "bad_jwt" || !strings.Contains(string(a.Body), "nobody") {
			t.Fatalf("unknown kid: %d %s", a.Status, a.Body)
		}
	})

	t.Run("rotation: old and new secrets", func(t *testing.T) {
		const next = "the-next-secret-of-at-least-32-bytes!"
		srv := newTestServer(t, withEnv("TINCAN_AUTH", "jwt"), withEnv("TINCAN_JWT_SECRET", next+","+testJWTSecret))
		jwtJoin(t, srv.endpoint, "rot", mintJWT(t, joinClaims("rot", "old", "")), 201)
		s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, joinClaims("rot", "new", "")).SignedString([]byte(next))
		jwtJoin(t, srv.endpoint, "rot", s, 201)
	})
}

func TestTokenCommand(t *testing.T) {
	env := map[string]string{"TINCAN_JWT_SECRET": testJWTSecret}
	getenv := func(k string) string { return env[k] }
	var out, errs bytes.Buffer
	if err := run(t.Context(), []string{"tincan", "token", "-room", "cmd", "-sub", "alice", "-name", "Alice", "-ttl", "5m"}, getenv, &out, &errs); err != nil {
		t.Fatalf("tincan token: %v\n%s", err, errs.String())
	}
	token := strings.TrimSpace(out.String())
	if strings.Count(out.String(), "\n") != 1 || strings.Count(token, ".") != 2 {
		t.Fatalf("tincan token printed %q, want one JWT and nothing else", out.String())
	}
	claims := jwt.MapClaims{}
	if _, err := jwt.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return []byte(testJWTSecret), nil }, jwt.WithValidMethods([]string{"HS256"})); err != nil {
		t.Fatalf("its token: %v", err)
	}
	if exp, _ := claims.GetExpirationTime(); claims["sub"] != "alice" || claims["room"] != "cmd" || claims["name"] != "Alice" || time.Until(exp.Time) > 5*time.Minute {
		t.Fatalf("its claims: %v", claims)
	}
	srv := newTestServer(t, withEnv("TINCAN_AUTH", "jwt"), withEnv("TINCAN_JWT_SECRET", testJWTSecret))
	if _, j := jwtJoin(t, srv.endpoint, "cmd", token, 201); j.Identity != "alice" || j.Name != "Alice" {
		t.Fatalf("joined as %+v", j)
	}
	for _, args := range [][]string{{"-room", "cmd"}, {"-sub", "x"}, {"-room", "bad room", "-sub", "x"}} {
		if err := run(t.Context(), append([]string{"tincan", "token"}, args...), getenv, &out, &errs); err == nil {
			t.Errorf("tincan token %q: no error", args)
		}
	}
	if err := run(t.Context(), []string{"tincan", "token", "-room", "cmd", "-sub", "x"}, func(string) string { return "" }, &out, &errs); err == nil || !strings.Contains(err.Error(), "TINCAN_JWT_SECRET") {
		t.Errorf("without a secret: %v", err)
	}
}

func TestAppsFlagsRefused(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-auth", "closed"}, "want open or jwt"},
		{[]string{"-auth", "jwt"}, "needs a key"},
		{[]string{"-auth", "jwt", "-jwt-secret", "short"}, "too short"},
		{[]string{"-jwt-secret", testJWTSecret}, "need -auth jwt"},
		{[]string{"-webhook-url", "http://127.0.0.1:9/hooks"}, "needs -webhook-secret"},
		{[]string{"-webhook-secret", testWebhookSecret}, "needs -webhook-url"},
		{[]string{"-webhook-url", "ftp://127.0.0.1/hooks", "-webhook-secret", testWebhookSecret}, "-webhook-url"},
		{[]string{"-webhook-url", "http://127.0.0.1:9/hooks", "-webhook-secret", "not-a-secret"}, "-webhook-secret"},
		{[]string{"-admin-key", "short"}, "too easy to guess"},
		{[]string{"-webhook-max-age", "0s"}, "must be positive"},
	} {
		_, err := parseFlags(append([]string{"tincan"}, c.args...), func(string) string { return "" }, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error saying %q", c.args, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "not-a-secret") {
			t.Errorf("%q: the error repeats the secret: %v", c.args, err)
		}
	}
}
