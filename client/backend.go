package client

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tincan/tincan/jwtauth"
)

// JoinClaims are what a join token says about the member it admits.
type JoinClaims struct {
	// Subject (sub) is the member's identity in the application: required.
	Subject string
	// Room is the room it admits to, or "*" for any: required.
	Room string
	// TTL is how long the token is valid: required. Keep it short (a
	// minute): it is used once, at join.
	TTL time.Duration
	// Name is an optional display name, shown to the other members.
	Name string
	// Metadata is optional JSON (at most 1 KiB), shown to the other
	// members and sent in webhooks.
	Metadata json.RawMessage
	// Audience and Issuer become aud and iss when set (the server checks
	// them when run with -jwt-audience, -jwt-issuer).
	Audience, Issuer string
	// KeyID becomes the header's kid when set (for -jwt-jwks-url).
	KeyID string
}

// MintJoinToken returns a join token for a server run with -auth jwt,
// signed with key by alg: "HS256", "HS384", "HS512" with the []byte of
// -jwt-secret; "RS256"…, "PS256"… with an *rsa.PrivateKey; "ES256"… with an
// *ecdsa.PrivateKey; "EdDSA" with an ed25519.PrivateKey, whose public key
// the server has (-jwt-public-key, -jwt-jwks-url). It refuses claims the
// server would refuse.
func MintJoinToken(key any, alg string, c JoinClaims) (string, error) {
	return jwtauth.MintWith(key, alg, c.KeyID, jwtauth.MintClaims{
		Subject: c.Subject, Room: c.Room, TTL: c.TTL, Name: c.Name, Metadata: c.Metadata,
		Audience: c.Audience, Issuer: c.Issuer,
	})
}

// WebhookEvent is one event tincan posts to the application's
// -webhook-url.
type WebhookEvent struct {
	// Type is room.created, member.joined, member.left or room.closed.
	Type string `json:"type"`
	// Timestamp is when the change happened.
	Timestamp time.Time   `json:"timestamp"`
	Data      WebhookData `json:"data"`
	// ID is the webhook-id header: the same on every retry of the event,
	// so deduplicate by it.
	ID string `json:"-"`
}

// WebhookData is what a webhook event is about.
type WebhookData struct {
	Room string `json:"room"`
	// Occupants is the room's member count after the change.
	Occupants int `json:"occupants"`
	// Seq orders the events of one room (increasing, not consecutive).
	Seq uint64 `json:"seq"`
	// ClientID, Identity, Name, Metadata: the member, for member.* events.
	ClientID string          `json:"client_id,omitempty"`
	Identity string          `json:"identity,omitempty"`
	Name     string          `json:"name,omitempty"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
	// Reason: left, timeout or kicked (member.left); empty or closed
	// (room.closed).
	Reason string `json:"reason,omitempty"`
}

// WebhookTolerance is how far a webhook's timestamp may be from now, as
// the Standard Webhooks libraries allow: older requests may be replays.
const WebhookTolerance = 5 * time.Minute

// ErrBadWebhook is returned by VerifyWebhook for a request tincan did not
// sign with the secret (or that is too old or malformed).
var ErrBadWebhook = errors.New("tincan: webhook not verified")

// VerifyWebhook checks a webhook request as the Standard Webhooks
// specification says: webhook-signature holds a v1 HMAC-SHA256 of
// "webhook-id.webhook-timestamp.body" under the key of secret ("whsec_"
// and base64, as given to -webhook-secret), and webhook-timestamp is
// within WebhookTolerance of now. It returns the decoded event, or an
// error wrapping ErrBadWebhook. Pass the body exactly as received.
func VerifyWebhook(secret string, header http.Header, body []byte, now time.Time) (WebhookEvent, error) {
	var ev WebhookEvent
	enc, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		return ev, errors.New(`tincan: webhook secret: want "whsec_" and base64`)
	}
	key, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		if key, err = base64.RawStdEncoding.DecodeString(enc); err != nil {
			return ev, errors.New(`tincan: webhook secret: the part after "whsec_" is not base64`)
		}
	}
	id, ts, sigs := header.Get("webhook-id"), header.Get("webhook-timestamp"), header.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return ev, fmt.Errorf("%w: webhook-id, webhook-timestamp or webhook-signature missing", ErrBadWebhook)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return ev, fmt.Errorf("%w: webhook-timestamp %q", ErrBadWebhook, ts)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > WebhookTolerance || d < -WebhookTolerance {
		return ev, fmt.Errorf("%w: webhook-timestamp %s is %v from now", ErrBadWebhook, ts, d.Round(time.Second))
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	verified := false
	for _, entry := range strings.Fields(sigs) {
		version, sig, _ := strings.Cut(entry, ",")
		got, err := base64.StdEncoding.DecodeString(sig)
		if version == "v1" && err == nil && hmac.Equal(got, want) {
			verified = true
			break
		}
	}
	if !verified {
		return ev, fmt.Errorf("%w: no signature matches", ErrBadWebhook)
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		return ev, fmt.Errorf("%w: body: %v", ErrBadWebhook, err)
	}
	ev.ID = id
	return ev, nil
}
