package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tincan/tincan/handlers"
	"github.com/tincan/tincan/jwtauth"
	"github.com/tincan/tincan/store"
	"github.com/tincan/tincan/webhook"
)

// checkApps checks the flags of an application in control: join tokens,
// webhooks, the admin key.
func (c *config) checkApps() error {
	switch c.auth {
	case "open":
		if len(c.jwtSecrets)+len(c.jwtPublicKeys) > 0 || c.jwtJWKSURL != "" {
			return errors.New("-jwt-secret, -jwt-public-key and -jwt-jwks-url need -auth jwt")
		}
	case "jwt":
		if len(c.jwtSecrets)+len(c.jwtPublicKeys) == 0 && c.jwtJWKSURL == "" {
			return errors.New("-auth jwt needs a key to verify join tokens: -jwt-secret, -jwt-public-key or -jwt-jwks-url")
		}
		for _, s := range c.jwtSecrets {
			if len(s) < 32 {
				return fmt.Errorf("-jwt-secret: a secret of %d bytes is too short to sign with; use at least 32 (e.g. openssl rand -hex 32)", len(s))
			}
		}
	default:
		return fmt.Errorf("-auth %q: want open or jwt", c.auth)
	}
	if c.webhookURL == "" && len(c.webhookSecrets) > 0 {
		return errors.New("-webhook-secret needs -webhook-url")
	}
	if c.webhookURL != "" {
		if len(c.webhookSecrets) == 0 {
			return errors.New("-webhook-url needs -webhook-secret (whsec_<base64>), so that the receiver can check what it gets")
		}
		if _, err := webhook.ParseURL(c.webhookURL); err != nil {
			return fmt.Errorf("-webhook-url: %w", err)
		}
		for _, s := range c.webhookSecrets {
			if _, err := webhook.ParseSecret(s); err != nil {
				return fmt.Errorf("-webhook-secret: %w", err)
			}
		}
	}
	if c.adminKey != "" && len(c.adminKey) < 16 {
		return fmt.Errorf("-admin-key: a key of %d characters is too easy to guess; use at least 16", len(c.adminKey))
	}
	return nil
}

// newDeliverer is the webhook deliverer of -webhook-url, nil without one.
// Its webhook-ids carry a prefix kept in the store, so that they stay the
// same across restarts and differ from another deployment's.
func newDeliverer(ctx context.Context, cfg config, st store.Store, reg prometheus.Registerer, log *slog.Logger) (*webhook.Deliverer, error) {
	if cfg.webhookURL == "" {
		return nil, nil
	}
	prefix, err := st.Secret(ctx, "webhook-id-prefix", 4)
	if err != nil {
		return nil, fmt.Errorf("webhook id prefix: %w", err)
	}
	d, err := webhook.New(webhook.Config{
		URL:        cfg.webhookURL,
		Secrets:    cfg.webhookSecrets,
		Timeout:    cfg.webhookTimeout,
		MaxAge:     cfg.webhookMaxAge,
		MaxBackoff: cfg.webhookMaxBackoff,
		IDPrefix:   hex.EncodeToString(prefix) + "_",
		Logger:     log,
		Registry:   reg,
	}, st)
	if err != nil {
		return nil, err
	}
	log.Info("webhooks", "url", cfg.webhookURL, "secrets", len(cfg.webhookSecrets))
	return d, nil
}

// newJoinTokens is the verifier of join tokens for -auth jwt; nil for open.
func newJoinTokens(ctx context.Context, cfg config, log *slog.Logger) (handlers.JoinTokens, error) {
	if cfg.auth != "jwt" {
		return nil, nil
	}
	secrets := make([][]byte, len(cfg.jwtSecrets))
	for i, s := range cfg.jwtSecrets {
		secrets[i] = []byte(s)
	}
	v, err := jwtauth.New(ctx, jwtauth.Config{
		Secrets:        secrets,
		PublicKeyFiles: cfg.jwtPublicKeys,
		JWKSURL:        cfg.jwtJWKSURL,
		Audience:       cfg.jwtAudience,
		Issuer:         cfg.jwtIssuer,
		Logger:         log,
	})
	if err != nil {
		return nil, fmt.Errorf("-auth jwt: %w", err)
	}
	log.Info("join tokens", "secrets", len(secrets), "public_keys", len(cfg.jwtPublicKeys), "jwks", cfg.jwtJWKSURL != "")
	return joinTokenVerifier{v}, nil
}

// joinTokenVerifier is jwtauth's verifier as the handlers take it.
type joinTokenVerifier struct{ v *jwtauth.Verifier }

func (j joinTokenVerifier) Verify(ctx context.Context, token, room string) (store.Profile, error) {
	c, err := j.v.Verify(ctx, token, room)
	if err != nil {
		var e *jwtauth.Error
		if errors.As(err, &e) {
			return store.Profile{}, errors.New(e.Detail)
		}
		return store.Profile{}, err
	}
	return store.Profile{Identity: c.Subject, Name: c.Name, Metadata: c.Metadata}, nil
}

var tokenRoom = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// runToken is `tincan token`: it prints a join token signed with
// TINCAN_JWT_SECRET (the first of its list), for curl and tests.
func runToken(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tincan token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: TINCAN_JWT_SECRET=… tincan token -room ROOM -sub SUBJECT [-ttl 1h] [-name NAME]\n\nPrints a join token (HS256 JWT) for -auth jwt on stdout.")
		fs.PrintDefaults()
	}
	room := fs.String("room", "", "the room it admits to (* for any room)")
	sub := fs.String("sub", "", "the member's identity")
	ttl := fs.Duration("ttl", time.Hour, "how long it is valid")
	name := fs.String("name", "", "a display name (optional)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("token: unexpected argument %q", fs.Arg(0))
	}
	secret, _, _ := strings.Cut(getenv("TINCAN_JWT_SECRET"), ",")
	if secret == "" {
		return errors.New("token: set TINCAN_JWT_SECRET to the secret the server verifies with")
	}
	if *room == "" || *sub == "" {
		return errors.New("token: -room and -sub are required")
	}
	if *room != "*" && !tokenRoom.MatchString(*room) {
		return fmt.Errorf("token: -room %q: a room name (^[A-Za-z0-9_-]{1,64}$) or * for any room", *room)
	}
	tok, err := jwtauth.Mint([]byte(strings.TrimSpace(secret)), jwtauth.MintClaims{Subject: *sub, Room: *room, TTL: *ttl, Name: *name})
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
