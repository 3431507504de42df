package jwtauth

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestAdmitsEachKeyType: a valid token of every supported algorithm, from a
// secret, a PEM file, a parsed key or a JWKS, is admitted with its claims.
func TestAdmitsEachKeyType(t *testing.T) {
	secret := randomSecret(t)
	rsaK := testRSA(t)
	p256, p384, p521 := testEC(t, elliptic.P256()), testEC(t, elliptic.P384()), testEC(t, elliptic.P521())
	ed := testEd(t)
	jwks := newJWKSServer(t,
		toJWK(t, &rsaK.PublicKey, "rsa-1"),
		toJWK(t, p256.Public(), "ec-1"),
		toJWK(t, ed.Public(), "ed-1"),
	)
	cases := []struct {
		name string
		cfg  Config
		key  any
		alg  string
		kid  string
	}{
		{"HS256", Config{Secrets: [][]byte{secret}}, secret, "HS256", ""},
		{"HS384", Config{Secrets: [][]byte{secret}}, secret, "HS384", ""},
		{"HS512", Config{Secrets: [][]byte{secret}}, secret, "HS512", ""},
		{"RS256 file", Config{PublicKeyFiles: []string{pemFile(t, &rsaK.PublicKey)}}, rsaK, "RS256", ""},
		{"RS512 file", Config{PublicKeyFiles: []string{pemFile(t, &rsaK.PublicKey)}}, rsaK, "RS512", ""},
		{"PS256 file", Config{PublicKeyFiles: []string{pemFile(t, &rsaK.PublicKey)}}, rsaK, "PS256", ""},
		{"PS384 parsed", Config{PublicKeys: []crypto.PublicKey{&rsaK.PublicKey}}, rsaK, "PS384", ""},
		{"ES256 file", Config{PublicKeyFiles: []string{pemFile(t, p256.Public())}}, p256, "ES256", ""},
		{"ES384 file", Config{PublicKeyFiles: []string{pemFile(t, p384.Public())}}, p384, "ES384", ""},
		{"ES512 parsed", Config{PublicKeys: []crypto.PublicKey{p521.Public()}}, p521, "ES512", ""},
		{"EdDSA file", Config{PublicKeyFiles: []string{pemFile(t, ed.Public())}}, ed, "EdDSA", ""},
		{"JWKS RS256", Config{JWKSURL: jwks.URL}, rsaK, "RS256", "rsa-1"},
		{"JWKS PS512", Config{JWKSURL: jwks.URL}, rsaK, "PS512", "rsa-1"},
		{"JWKS ES256", Config{JWKSURL: jwks.URL}, p256, "ES256", "ec-1"},
		{"JWKS EdDSA", Config{JWKSURL: jwks.URL}, ed, "EdDSA", "ed-1"},
		{"JWKS EdDSA without kid", Config{JWKSURL: jwks.URL}, ed, "EdDSA", ""},
		{"JWKS and secret, secret token", Config{JWKSURL: jwks.URL, Secrets: [][]byte{secret}}, secret, "HS256", ""},
		{"all kinds, ES384 token", Config{JWKSURL: jwks.URL, Secrets: [][]byte{secret},
			PublicKeyFiles: []string{pemFile(t, &rsaK.PublicKey), pemFile(t, p384.Public())}}, p384, "ES384", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := mustNew(t, c.cfg)
			tok, err := MintWith(c.key, c.alg, c.kid, MintClaims{
				Subject: "user-1", Room: "lobby", TTL: time.Hour, Now: t0,
				Name: "Ada", Metadata: []byte(`{ "team": "blue" }`),
			})
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.Verify(context.Background(), tok, "lobby")
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if got.Subject != "user-1" || got.Room != "lobby" || got.Name != "Ada" ||
				string(got.Metadata) != `{"team":"blue"}` || !got.ExpiresAt.Equal(t0.Add(time.Hour)) || got.KeyID != c.kid {
				t.Fatalf("claims %+v", got)
			}
		})
	}
}

// TestRotatedSecrets: with the new and the old secret configured, tokens of
// both are admitted; with only the new one, the old token is refused.
func TestRotatedSecrets(t *testing.T) {
	oldS, newS := randomSecret(t), randomSecret(t)
	both := mustNew(t, Config{Secrets: [][]byte{newS, oldS}})
	onlyNew := mustNew(t, Config{Secrets: [][]byte{newS}})
	for name, s := range map[string][]byte{"old": oldS, "new": newS} {
		tok, err := Mint(s, MintClaims{Subject: "u", Room: "r", TTL: time.Minute, Now: t0})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := both.Verify(context.Background(), tok, "r"); err != nil {
			t.Fatalf("%s secret refused during rotation: %v", name, err)
		}
		_, err = onlyNew.Verify(context.Background(), tok, "r")
		if name == "old" {
			wantRefusal(t, err, ReasonBadSignature, "does not verify")
		} else if err != nil {
			t.Fatal(err)
		}
	}
}

// TestClaimsRoomWildcardAndOptional: "*" covers any room; absent optional
// claims come back empty; nbf comes back.
func TestClaimsRoomWildcardAndOptional(t *testing.T) {
	s := randomSecret(t)
	v := mustNew(t, Config{Secrets: [][]byte{s}})
	c := claims()
	c["room"] = "*"
	c["nbf"] = t0.Add(-time.Minute).Unix()
	c["metadata"] = nil
	got, err := v.Verify(context.Background(), sign(t, s, "HS256", "", c), "any-room")
	if err != nil {
		t.Fatal(err)
	}
	if got.Room != "*" || got.Name != "" || got.Metadata != nil || !got.NotBefore.Equal(t0.Add(-time.Minute)) {
		t.Fatalf("claims %+v", got)
	}
	// Within the leeway of exp and nbf.
	c = claims()
	c["exp"] = t0.Add(-20 * time.Second).Unix()
	c["nbf"] = t0.Add(20 * time.Second).Unix()
	if _, err := v.Verify(context.Background(), sign(t, s, "HS256", "", c), "lobby"); err != nil {
		t.Fatalf("refused within the leeway: %v", err)
	}
}

// TestRefusals: every refusal, each with its Reason and Detail.
func TestRefusals(t *testing.T) {
	s := randomSecret(t)
	rsaK := testRSA(t)
	ec := testEC(t, elliptic.P256())
	hs := mustNew(t, Config{Secrets: [][]byte{s}})
	strict := mustNew(t, Config{Secrets: [][]byte{s}, Audience: "tincan", Issuer: "app"})
	rsaOnly := mustNew(t, Config{PublicKeyFiles: []string{pemFile(t, &rsaK.PublicKey)}})
	ecOnly := mustNew(t, Config{PublicKeyFiles: []string{pemFile(t, ec.Public())}})

	with := func(k string, val any) jwt.MapClaims {
		c := claims()
		if val == nil {
			delete(c, k)
		} else {
			c[k] = val
		}
		return c
	}
	aud := func(c jwt.MapClaims) jwt.MapClaims { c["aud"] = "tincan"; c["iss"] = "app"; return c }
	hsTok := func(c jwt.MapClaims) string { return sign(t, s, "HS256", "", c) }
	good := hsTok(claims())
	parts := strings.Split(good, ".")

	cases := []struct {
		name   string
		v      *Verifier
		token  string
		room   string
		reason string
		detail string
	}{
		{"not a jwt", hs, "opaque-member-token", "lobby", ReasonMalformed, "three dot-separated parts"},
		{"four parts", hs, good + ".x", "lobby", ReasonMalformed, "three dot-separated parts"},
		{"too long", hs, strings.Repeat("a", MaxTokenLen) + ".b.c", "lobby", ReasonMalformed, "more than 8192"},
		{"header not base64", hs, "!!!." + parts[1] + "." + parts[2], "lobby", ReasonMalformed, "base64 decode header"},
		{"header not JSON", hs, rawToken(`{"alg"`, `{}`, "x"), "lobby", ReasonMalformed, "JSON decode header"},
		{"payload not an object", hs, rawToken(`{"alg":"HS256"}`, `[1,2]`, "x"), "lobby", ReasonMalformed, "JSON decode claim"},
		{"signature not base64", hs, parts[0] + "." + parts[1] + ".***", "lobby", ReasonMalformed, "base64 decode signature"},
		{"no alg", hs, rawToken(`{"typ":"JWT"}`, `{}`, "x"), "lobby", ReasonMalformed, "no alg"},
		{"unknown alg", hs, rawToken(`{"alg":"HS999"}`, `{}`, "x"), "lobby", ReasonAlgorithm, `"HS999" is not supported`},
		{"alg none", hs, rawToken(`{"alg":"none"}`, `{"sub":"u","room":"lobby","exp":9999999999}`, ""), "lobby", ReasonAlgorithm, "unsigned (alg none)"},
		{"RS256 to a secret", hs, sign(t, rsaK, "RS256", "", claims()), "lobby", ReasonAlgorithm, "RS256, which the configured keys do not allow (they allow HS256, HS384, HS512)"},
		{"HS256 to an RSA key", rsaOnly, hsTok(claims()), "lobby", ReasonAlgorithm, "HS256, which the configured keys do not allow"},
		{"ES384 to a P-256 key", ecOnly, sign(t, testEC(t, elliptic.P384()), "ES384", "", claims()), "lobby", ReasonAlgorithm, "ES384, which the configured keys do not allow (they allow ES256)"},
		{"kid not a string", hs, rawToken(`{"alg":"HS256","kid":7}`, `{}`, "AAAA"), "lobby", ReasonMalformed, "kid is not a string"},
		{"bad signature", hs, sign(t, randomSecret(t), "HS256", "", claims()), "lobby", ReasonBadSignature, "does not verify with any configured key"},
		{"tampered payload", hs, parts[0] + "." + strings.Split(hsTok(with("room", "*")), ".")[1] + "." + parts[2], "lobby", ReasonBadSignature, "does not verify"},
		{"bad RSA signature", rsaOnly, sign(t, mustRSA1024(t), "RS256", "", claims()), "lobby", ReasonBadSignature, "does not verify"},
		{"expired", hs, hsTok(with("exp", t0.Add(-31*time.Second).Unix())), "lobby", ReasonExpired, "the token expired at 2026-12-06T08:59:29Z"},
		{"not yet valid", hs, hsTok(with("nbf", t0.Add(time.Minute).Unix())), "lobby", ReasonNotYetValid, "not valid before 2026-12-06T09:01:00Z"},
		{"missing exp", hs, hsTok(with("exp", nil)), "lobby", ReasonMissingClaim, "no exp claim"},
		{"exp not a number", hs, hsTok(with("exp", "tomorrow")), "lobby", ReasonInvalidClaim, "exp is not a number"},
		{"exp out of range", hs, hsTok(with("exp", 1e300)), "lobby", ReasonInvalidClaim, "exp is out of range"},
		{"nbf not a number", hs, hsTok(with("nbf", true)), "lobby", ReasonInvalidClaim, "nbf is not a number"},
		{"wrong audience", strict, hsTok(func() jwt.MapClaims { c := aud(claims()); delete(c, "aud"); return c }()), "lobby", ReasonAudience, `no aud claim; the audience must include "tincan"`},
		{"other audience", strict, hsTok(func() jwt.MapClaims { c := aud(claims()); c["aud"] = []string{"x", "y"}; return c }()), "lobby", ReasonAudience, `audience ["x", "y"] does not include "tincan"`},
		{"aud not strings", strict, hsTok(func() jwt.MapClaims { c := aud(claims()); c["aud"] = 5; return c }()), "lobby", ReasonInvalidClaim, "aud is not a string or a list of strings"},
		{"missing issuer", strict, hsTok(func() jwt.MapClaims { c := aud(claims()); delete(c, "iss"); return c }()), "lobby", ReasonIssuer, `no iss claim; the issuer must be "app"`},
		{"wrong issuer", strict, hsTok(func() jwt.MapClaims { c := aud(claims()); c["iss"] = "evil"; return c }()), "lobby", ReasonIssuer, `issuer is "evil", not "app"`},
		{"iss not a string", strict, hsTok(func() jwt.MapClaims { c := aud(claims()); c["iss"] = 1; return c }()), "lobby", ReasonInvalidClaim, "iss is not a string"},
		{"missing sub", hs, hsTok(with("sub", nil)), "lobby", ReasonMissingClaim, "no sub claim"},
		{"empty sub", hs, hsTok(with("sub", "")), "lobby", ReasonMissingClaim, "sub claim is empty"},
		{"sub not a string", hs, hsTok(with("sub", 42)), "lobby", ReasonInvalidClaim, "sub is not a string"},
		{"sub too long", hs, hsTok(with("sub", strings.Repeat("s", 257))), "lobby", ReasonInvalidClaim, "sub is 257 bytes long, more than 256"},
		{"sub control char", hs, hsTok(with("sub", "a\nb")), "lobby", ReasonInvalidClaim, "sub contains a control character"},
		{"missing room", hs, hsTok(with("room", nil)), "lobby", ReasonMissingClaim, "no room claim"},
		{"empty room", hs, hsTok(with("room", "")), "lobby", ReasonMissingClaim, "room claim is empty"},
		{"room not a string", hs, hsTok(with("room", []string{"lobby"})), "lobby", ReasonInvalidClaim, "room is not a string"},
		{"other room", hs, good, "kitchen", ReasonWrongRoom, `the token is for room "lobby", not for room "kitchen"`},
		{"name not a string", hs, hsTok(with("name", 3)), "lobby", ReasonInvalidClaim, "name is not a string"},
		{"name too long", hs, hsTok(with("name", strings.Repeat("é", 129))), "lobby", ReasonInvalidClaim, "name is 129 characters long, more than 128"},
		{"name control char", hs, hsTok(with("name", "a\u0000")), "lobby", ReasonInvalidClaim, "name contains a control character"},
		{"metadata too large", hs, hsTok(with("metadata", map[string]string{"x": strings.Repeat("m", 1100)})), "lobby", ReasonInvalidClaim, "metadata is 1108 bytes of JSON, more than 1024"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.v.Verify(context.Background(), c.token, c.room)
			if err == nil {
				t.Fatalf("admitted: %+v", got)
			}
			wantRefusal(t, err, c.reason, c.detail)
			if got.Subject != "" || got.Room != "" || got.Metadata != nil {
				t.Fatalf("claims returned with a refusal: %+v", got)
			}
		})
	}
	// The reference token itself is admitted, so each refusal is its change.
	if _, err := hs.Verify(context.Background(), good, "lobby"); err != nil {
		t.Fatal(err)
	}
	if _, err := strict.Verify(context.Background(), hsTok(aud(claims())), "lobby"); err != nil {
		t.Fatal(err)
	}
}

func mustRSA1024(t testing.TB) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestAlgConfusion: the RSA public key's PEM bytes used as an HS256 secret
// are refused, whether or not a secret is also configured.
func TestAlgConfusion(t *testing.T) {
	rsaK := testRSA(t)
	path := pemFile(t, &rsaK.PublicKey)
	pemBytes := mustRead(t, path)
	forged := sign(t, pemBytes, "HS256", "", claims())
	onlyRSA := mustNew(t, Config{PublicKeyFiles: []string{path}})
	_, err := onlyRSA.Verify(context.Background(), forged, "lobby")
	wantRefusal(t, err, ReasonAlgorithm, "HS256, which the configured keys do not allow")

	withSecret := mustNew(t, Config{PublicKeyFiles: []string{path}, Secrets: [][]byte{randomSecret(t)}})
	_, err = withSecret.Verify(context.Background(), forged, "lobby")
	wantRefusal(t, err, ReasonBadSignature, "does not verify")

	// The same through a JWKS, with the kid of the RSA key.
	jwks := newJWKSServer(t, toJWK(t, &rsaK.PublicKey, "k1"))
	viaJWKS := mustNew(t, Config{JWKSURL: jwks.URL})
	_, err = viaJWKS.Verify(context.Background(), sign(t, pemBytes, "HS256", "k1", claims()), "lobby")
	wantRefusal(t, err, ReasonAlgorithm, "HS256")

	// A JWK whose alg is RS256 admits RS256 only, not PS256.
	narrowed := toJWK(t, &rsaK.PublicKey, "k2")
	narrowed["alg"] = "RS256"
	jwks2 := newJWKSServer(t, narrowed)
	v2 := mustNew(t, Config{JWKSURL: jwks2.URL})
	_, err = v2.Verify(context.Background(), sign(t, rsaK, "PS256", "k2", claims()), "lobby")
	wantRefusal(t, err, ReasonAlgorithm, `PS256, but its key "k2" allows only RS256`)
	if _, err := v2.Verify(context.Background(), sign(t, rsaK, "RS256", "k2", claims()), "lobby"); err != nil {
		t.Fatal(err)
	}

	// The operator cannot configure a PEM document as a secret.
	if _, err := New(context.Background(), Config{Secrets: [][]byte{pemBytes}}); err == nil || !strings.Contains(err.Error(), "PEM") {
		t.Fatalf("PEM as a secret: %v", err)
	}
}

// TestAlgNone: an unsigned token is refused, with or without a signature
// segment, whatever the keys.
func TestAlgNone(t *testing.T) {
	rsaK := testRSA(t)
	for name, cfg := range map[string]Config{
		"secret": {Secrets: [][]byte{randomSecret(t)}},
		"rsa":    {PublicKeyFiles: []string{pemFile(t, &rsaK.PublicKey)}},
	} {
		t.Run(name, func(t *testing.T) {
			v := mustNew(t, cfg)
			tok, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims()).SignedString(jwt.UnsafeAllowNoneSignatureType)
			if err != nil {
				t.Fatal(err)
			}
			_, err = v.Verify(context.Background(), tok, "lobby")
			wantRefusal(t, err, ReasonAlgorithm, "alg none")
			_, err = v.Verify(context.Background(), tok+"c2ln", "lobby")
			wantRefusal(t, err, ReasonAlgorithm, "alg none")
			for _, alg := range []string{"None", "NONE"} {
				_, err = v.Verify(context.Background(), rawToken(`{"alg":"`+alg+`"}`, `{"sub":"u","room":"lobby","exp":9999999999}`, ""), "lobby")
				wantRefusal(t, err, ReasonAlgorithm, "not supported")
			}
		})
	}
}

// TestKidRefetchRateLimit: an unknown kid refetches the JWKS at most once
// per KidRefetchInterval, however many tokens with random kids arrive; a
// key added to the JWKS is found by the next refetch allowed.
func TestKidRefetchRateLimit(t *testing.T) {
	rsaK := testRSA(t)
	ec := testEC(t, elliptic.P256())
	jwks := newJWKSServer(t, toJWK(t, &rsaK.PublicKey, "old"))
	clk := newClock(t0)
	v := mustNew(t, Config{JWKSURL: jwks.URL, Now: clk.Now, JWKSRefresh: time.Hour})
	if n := jwks.requests.Load(); n != 1 {
		t.Fatalf("%d fetches at New, want 1", n)
	}
	flood := func() {
		var wg sync.WaitGroup
		for i := range 200 {
			wg.Go(func() {
				tok := sign(t, ec, "ES256", fmt.Sprintf("random-%d", i), claims())
				_, err := v.Verify(context.Background(), tok, "lobby")
				wantRefusal(t, err, ReasonUnknownKey, fmt.Sprintf(`kid "random-%d"`, i))
			})
		}
		wg.Wait()
	}
	clk.Add(time.Second)
	flood() // the fetch at New is 1 s old: no refetch
	if n := jwks.requests.Load(); n != 1 {
		t.Fatalf("%d fetches after a flood within 30 s of the last, want 1", n)
	}
	clk.Add(KidRefetchInterval)
	flood() // one refetch for all 200
	if n := jwks.requests.Load(); n != 2 {
		t.Fatalf("%d fetches after a flood 31 s after the last, want 2", n)
	}

	// A new key: refused until the next refetch is allowed, then admitted.
	jwks.setKeys(t, toJWK(t, &rsaK.PublicKey, "old"), toJWK(t, ec.Public(), "new"))
	newTok := sign(t, ec, "ES256", "new", claims())
	clk.Add(10 * time.Second)
	_, err := v.Verify(context.Background(), newTok, "lobby")
	wantRefusal(t, err, ReasonUnknownKey, `"new"`)
	clk.Add(KidRefetchInterval)
	if _, err := v.Verify(context.Background(), newTok, "lobby"); err != nil {
		t.Fatalf("new kid after the interval: %v", err)
	}
	if n := jwks.requests.Load(); n != 3 {
		t.Fatalf("%d fetches, want 3", n)
	}
	// A known kid never fetches.
	for range 50 {
		if _, err := v.Verify(context.Background(), sign(t, rsaK, "RS256", "old", claims()), "lobby"); err != nil {
			t.Fatal(err)
		}
	}
	if n := jwks.requests.Load(); n != 3 {
		t.Fatalf("%d fetches after known kids, want 3", n)
	}
}

// TestJWKSRefreshKeepsOldSetOnFailure: the background refresh replaces the
// set when it succeeds, keeps it when the server fails or answers garbage,
// and stops with its context.
func TestJWKSRefreshKeepsOldSetOnFailure(t *testing.T) {
	rsaK := testRSA(t)
	ed := testEd(t)
	jwks := newJWKSServer(t, toJWK(t, &rsaK.PublicKey, "k1"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v, err := New(ctx, Config{JWKSURL: jwks.URL, Now: fixedNow, JWKSRefresh: 10 * time.Millisecond, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, rsaK, "RS256", "k1", claims())
	waitFetches := func(n int64) {
		t.Helper()
		target := jwks.requests.Load() + n
		deadline := time.Now().Add(5 * time.Second)
		for jwks.requests.Load() < target {
			if time.Now().After(deadline) {
				t.Fatalf("the JWKS was not refreshed")
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond) // let the last fetch install its result
	}

	jwks.fail.Store(true)
	waitFetches(3)
	if _, err := v.Verify(context.Background(), tok, "lobby"); err != nil {
		t.Fatalf("refused while the JWKS server fails: %v", err)
	}
	jwks.fail.Store(false)
	jwks.mu.Lock()
	jwks.body = []byte(`{"keys": [{"kty":"oct","k":"c2VjcmV0"}]}`) // no usable key
	jwks.mu.Unlock()
	waitFetches(3)
	if _, err := v.Verify(context.Background(), tok, "lobby"); err != nil {
		t.Fatalf("refused while the JWKS holds no usable key: %v", err)
	}

	// A successful refresh replaces the set: k1 is gone, k2 admitted.
	jwks.setKeys(t, toJWK(t, ed.Public(), "k2"))
	waitFetches(2)
	if _, err := v.Verify(context.Background(), sign(t, ed, "EdDSA", "k2", claims()), "lobby"); err != nil {
		t.Fatalf("new key after refresh: %v", err)
	}
	_, err = v.Verify(context.Background(), tok, "lobby")
	wantRefusal(t, err, ReasonUnknownKey, `"k1"`)

	cancel()
	time.Sleep(30 * time.Millisecond)
	n := jwks.requests.Load()
	time.Sleep(60 * time.Millisecond)
	if m := jwks.requests.Load(); m != n {
		t.Fatalf("%d fetches after the context ended", m-n)
	}
}

// TestNewRefusesBadConfig: no key, bad key files, bad secrets and a JWKS
// that cannot be fetched or holds no usable key fail New.
func TestNewRefusesBadConfig(t *testing.T) {
	rsaK := testRSA(t)
	privDER, err := x509.MarshalPKCS8PrivateKey(rsaK)
	if err != nil {
		t.Fatal(err)
	}
	weakDER, err := x509.MarshalPKIXPublicKey(&mustRSA1024(t).PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	down := newJWKSServer(t)
	down.fail.Store(true)
	octOnly := newJWKSServer(t, map[string]any{"kty": "oct", "k": "c2VjcmV0", "kid": "x"})
	notJSON := newJWKSServer(t)
	notJSON.body = []byte("<html>")
	cases := []struct {
		name   string
		cfg    Config
		detail string
	}{
		{"no key", Config{Audience: "x"}, "no key configured"},
		{"empty secret", Config{Secrets: [][]byte{{}}}, "secret 1 is empty"},
		{"missing file", Config{PublicKeyFiles: []string{"/nonexistent/key.pem"}}, "no such file"},
		{"not PEM", Config{PublicKeyFiles: []string{writeFile(t, []byte("hello"))}}, "no PEM block"},
		{"private key", Config{PublicKeyFiles: []string{writeFile(t, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}))}}, "the server needs no private key"},
		{"garbage block", Config{PublicKeyFiles: []string{writeFile(t, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("junk")}))}}, "PEM block 1"},
		{"weak RSA", Config{PublicKeyFiles: []string{writeFile(t, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: weakDER}))}}, "at least 2048"},
		{"bad parsed key", Config{PublicKeys: []crypto.PublicKey{"key"}}, "unsupported public key type"},
		{"JWKS down", Config{JWKSURL: down.URL}, "500"},
		{"JWKS unreachable", Config{JWKSURL: "http://127.0.0.1:1/jwks"}, "JWKS"},
		{"JWKS oct only", Config{JWKSURL: octOnly.URL}, "no usable signing key"},
		{"JWKS not JSON", Config{JWKSURL: notJSON.URL}, "not a JWKS document"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.Logger = quietLogger()
			v, err := New(context.Background(), c.cfg)
			if err == nil || !strings.Contains(err.Error(), c.detail) {
				t.Fatalf("New = %v, %v; want an error containing %q", v, err, c.detail)
			}
		})
	}
}

func TestIsJWT(t *testing.T) {
	s := randomSecret(t)
	tok, _ := Mint(s, MintClaims{Subject: "u", Room: "r", TTL: time.Minute})
	for cred, want := range map[string]bool{
		tok: true, "a.b.c": true, "..": true,
		"": false, "opaque": false, "a.b": false, "a.b.c.d": false, "v1.member-token": false,
	} {
		if IsJWT(cred) != want {
			t.Errorf("IsJWT(%q) = %v, want %v", cred, !want, want)
		}
	}
}

// TestMintRefuses: Mint does not make tokens that Verify would refuse.
func TestMintRefuses(t *testing.T) {
	s := randomSecret(t)
	ok := MintClaims{Subject: "u", Room: "r", TTL: time.Minute}
	for name, c := range map[string]MintClaims{
		"no subject":   {Room: "r", TTL: time.Minute},
		"no room":      {Subject: "u", TTL: time.Minute},
		"no ttl":       {Subject: "u", Room: "r"},
		"long subject": {Subject: strings.Repeat("s", 257), Room: "r", TTL: time.Minute},
		"long name":    {Subject: "u", Room: "r", TTL: time.Minute, Name: strings.Repeat("n", 129)},
		"bad metadata": {Subject: "u", Room: "r", TTL: time.Minute, Metadata: []byte("{")},
		"big metadata": {Subject: "u", Room: "r", TTL: time.Minute, Metadata: []byte(`"` + strings.Repeat("m", 1100) + `"`)},
		"control char": {Subject: "u\r", Room: "r", TTL: time.Minute},
	} {
		if _, err := Mint(s, c); err == nil {
			t.Errorf("%s: minted", name)
		}
	}
	if _, err := Mint(nil, ok); err == nil {
		t.Error("minted with an empty secret")
	}
	if _, err := MintWith(s, "none", "", ok); err == nil {
		t.Error("minted alg none")
	}
	// Mint's audience and issuer satisfy a strict verifier.
	v := mustNew(t, Config{Secrets: [][]byte{s}, Audience: "tincan", Issuer: "app", Now: time.Now})
	tok, err := Mint(s, MintClaims{Subject: "u", Room: "r", TTL: time.Minute, Audience: "tincan", Issuer: "app"})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := v.Verify(context.Background(), tok, "r"); err != nil || c.Issuer != "app" {
		t.Fatalf("%+v %v", c, err)
	}
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
