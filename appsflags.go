package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tincan/tincan/handlers"
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
	return nil, errors.New("-auth jwt: not wired yet")
}
