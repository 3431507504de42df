package main

import (
	"errors"
	"fmt"
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
	if c.webhookURL != "" && len(c.webhookSecrets) == 0 {
		return errors.New("-webhook-url needs -webhook-secret (whsec_<base64>), so that the receiver can check what it gets")
	}
	if c.adminKey != "" && len(c.adminKey) < 16 {
		return fmt.Errorf("-admin-key: a key of %d characters is too easy to guess; use at least 16", len(c.adminKey))
	}
	return nil
}
