package bench

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"
	"time"

	"github.com/tincan/tincan/jwtauth"
	"golang.org/x/crypto/bcrypt"
)

// BenchmarkJoinTokenVerify is the cost of jwtauth's Verify per join, for
// the two key kinds BENCHMARKS.md §9 compares, next to what else a join may
// cost: a bcrypt comparison (a room password, DefaultCost) and minting (the
// application's side).
func BenchmarkJoinTokenVerify(b *testing.B) {
	ctx := context.Background()
	secret := []byte("0123456789abcdef0123456789abcdef")
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	claims := jwtauth.MintClaims{Subject: "user-42", Room: "room-1", TTL: time.Hour, Name: "Ada"}
	for _, c := range []struct {
		name string
		cfg  jwtauth.Config
		key  any
		alg  string
	}{
		{"HS256", jwtauth.Config{Secrets: [][]byte{secret}}, secret, "HS256"},
		{"ES256", jwtauth.Config{PublicKeys: []crypto.PublicKey{&ec.PublicKey}}, ec, "ES256"},
	} {
		v, err := jwtauth.New(ctx, c.cfg)
		if err != nil {
			b.Fatal(err)
		}
		tok, err := jwtauth.MintWith(c.key, c.alg, "", claims)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("verify-"+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, tok, "room-1"); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("mint-"+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := jwtauth.MintWith(c.key, c.alg, "", claims); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("bcrypt-compare-default-cost", func(b *testing.B) {
		h, err := bcrypt.GenerateFromPassword([]byte("correct horse"), bcrypt.DefaultCost)
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if err := bcrypt.CompareHashAndPassword(h, []byte("correct horse")); err != nil {
				b.Fatal(err)
			}
		}
	})
}
