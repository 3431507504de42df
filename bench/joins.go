package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/tincan/tincan/client"
)

// joinsTokenDefault is how many join tokens -jwt mints when -count is 0:
// the run ends when they are used up, or at -duration.
const joinsTokenDefault = 60000

// joins: -rooms workers each join a room of their own and leave it again
// (the room is created and deleted), one after the other, until -duration
// or -count joins. With -jwt each join carries a join token minted before
// the timed part (so the load generator's signing is not measured), for
// that room and a subject of its own; without, the server runs -auth open.
// It reports joins/s, the join's latency (POST join answered 201) and the
// server's CPU per join and its leave.
func (b *bench) joins(ctx context.Context, res *Result) error {
	cfg := b.cfg
	b.join = newRecorder()
	res.Auth = "open"
	n := cfg.count
	if n == 0 {
		n = joinsTokenDefault
	}
	var tokens []string
	if cfg.jwt != "" {
		res.Auth = cfg.jwt
		start := time.Now()
		var err error
		if tokens, err = b.mintTokens(n); err != nil {
			return err
		}
		res.SetupSec = round2(time.Since(start).Seconds())
	}
	stop, cancelStop := context.WithTimeout(ctx, cfg.duration)
	defer cancelStop()
	var next, joined atomic.Int64
	b.measure(ctx, res, func() string { return fmt.Sprintf(" joins %d", joined.Load()) }, func() {
		done := make(chan struct{})
		for range cfg.rooms {
			go func() {
				defer func() { done <- struct{}{} }()
				failures := 0
				for stop.Err() == nil && failures < 10 {
					i := int(next.Add(1) - 1)
					if cfg.count > 0 && i >= cfg.count || tokens != nil && i >= len(tokens) {
						return
					}
					var opts client.JoinOptions
					if tokens != nil {
						opts.JoinToken = tokens[i]
					}
					t0 := time.Now()
					octx, cancel := b.opCtx(ctx)
					p, err := b.cl.Join(octx, b.joinRoom(i), opts)
					cancel()
					if err != nil {
						if ctx.Err() == nil {
							b.c.fail(kind("join", err))
						}
						failures++
						continue
					}
					failures = 0
					b.join.add(time.Since(t0))
					joined.Add(1)
					b.leave(ctx, p)
				}
				if failures >= 10 {
					b.c.fail("join worker stopped after 10 failed joins")
				}
			}()
		}
		for range cfg.rooms {
			<-done
		}
	})
	res.Joins = joined.Load()
	if res.ElapsedSec > 0 {
		res.JoinsPS = round2(float64(res.Joins) / res.ElapsedSec)
	}
	return ctx.Err()
}

// joinRoom is the room of the i-th join.
func (b *bench) joinRoom(i int) string { return b.room("j", i, -1) }

// mintTokens signs n join tokens, the i-th for joinRoom(i) and subject
// "u<i>", valid for an hour, with -jwt's key.
func (b *bench) mintTokens(n int) ([]string, error) {
	var key any
	alg := "HS256"
	switch b.cfg.jwt {
	case "hs256":
		key = []byte(b.cfg.jwtSecret)
	case "es256":
		pem, err := os.ReadFile(b.cfg.jwtKey)
		if err != nil {
			return nil, err
		}
		k, err := jwt.ParseECPrivateKeyFromPEM(pem)
		if err != nil {
			return nil, fmt.Errorf("-jwt-key: %w", err)
		}
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("-jwt-key: ES256 needs a P-256 key, not %s", k.Curve.Params().Name)
		}
		key, alg = (*ecdsa.PrivateKey)(k), "ES256"
	}
	out := make([]string, n)
	for i := range out {
		t, err := client.MintJoinToken(key, alg, client.JoinClaims{
			Subject: "u" + strconv.Itoa(i), Room: b.joinRoom(i), TTL: time.Hour,
		})
		if err != nil {
			return nil, err
		}
		out[i] = t
	}
	return out, nil
}
