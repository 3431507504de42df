package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The Standard Webhooks headers (standard-webhooks/standard-webhooks,
// spec/standard-webhooks.md).
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// SecretPrefix starts every secret, as the Standard Webhooks libraries
// write them.
const SecretPrefix = "whsec_"

// MinSecretBytes is the shortest key ParseSecret accepts: the spec asks for
// keys of 24 to 64 bytes (its test vector's key is 24 bytes).
const MinSecretBytes = 24

// Secret is a signing key: the base64-decoded part of a whsec_ secret. Its
// String never shows the key.
type Secret struct{ key []byte }

// String hides the key.
func (s Secret) String() string { return SecretPrefix + "…" }

// ParseSecret reads a Standard Webhooks secret: "whsec_" followed by the
// key in standard base64 (padding optional), at least MinSecretBytes
// bytes. The errors say which of these is wrong and never repeat the
// secret.
func ParseSecret(s string) (Secret, error) {
	enc, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok {
		return Secret{}, errors.New(`webhook: a secret starts with "whsec_" followed by the key in base64`)
	}
	if enc == "" {
		return Secret{}, errors.New(`webhook: secret: no key after "whsec_"`)
	}
	var key []byte
	var err error
	if strings.HasSuffix(enc, "=") {
		key, err = base64.StdEncoding.Strict().DecodeString(enc)
	} else {
		key, err = base64.RawStdEncoding.Strict().DecodeString(enc)
	}
	if err != nil {
		var pos base64.CorruptInputError
		if errors.As(err, &pos) {
			return Secret{}, fmt.Errorf(`webhook: secret: the key after "whsec_" is not standard base64 (bad input at byte %d of the key)`, int64(pos))
		}
		return Secret{}, errors.New(`webhook: secret: the key after "whsec_" is not standard base64`)
	}
	if len(key) < MinSecretBytes {
		return Secret{}, fmt.Errorf("webhook: secret: the key is %d bytes; at least %d are needed", len(key), MinSecretBytes)
	}
	return Secret{key: key}, nil
}

// Sign is one signature entry, "v1,<base64 HMAC-SHA256(key,
// "id.timestamp.body")>", timestamp in unix seconds.
func (s Secret) Sign(id string, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write(strconv.AppendInt(nil, timestamp, 10))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// SignatureHeader is the webhook-signature value: the entries of every
// secret, space-separated (a receiver accepts any one of them, which lets
// an operator rotate secrets).
func SignatureHeader(secrets []Secret, id string, timestamp int64, body []byte) string {
	sigs := make([]string, len(secrets))
	for i, s := range secrets {
		sigs[i] = s.Sign(id, timestamp, body)
	}
	return strings.Join(sigs, " ")
}

// Headers sets the Standard Webhooks headers and Content-Type of one
// attempt made at time at.
func Headers(h interface{ Set(string, string) }, secrets []Secret, id string, at time.Time, body []byte) {
	ts := at.Unix()
	h.Set("Content-Type", "application/json")
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	h.Set(HeaderSignature, SignatureHeader(secrets, id, ts, body))
}

// ParseURL checks a receiver's URL: absolute http or https, with a host,
// without user information (credentials belong in the receiver's
// verification of the signature, not in a URL that ends up in logs) and
// without a fragment.
func ParseURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("webhook: no URL")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("webhook: URL: %w", err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("webhook: URL %q: the scheme must be http or https", redact(u))
	case u.Opaque != "":
		return nil, fmt.Errorf("webhook: URL %q: write it as %s://host/path", redact(u), u.Scheme)
	case u.User != nil:
		return nil, errors.New("webhook: URL: user information (user:password@) is not allowed")
	case u.Hostname() == "":
		return nil, fmt.Errorf("webhook: URL %q: no host", redact(u))
	case u.Fragment != "" || u.RawFragment != "" || strings.Contains(raw, "#"):
		return nil, fmt.Errorf("webhook: URL %q: a fragment (#…) is not allowed", redact(u))
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("webhook: URL %q: bad port %q", redact(u), p)
		}
	}
	return u, nil
}

// redact is u without its fragment and user information, for errors.
func redact(u *url.URL) string {
	c := *u
	c.User = nil
	c.Fragment, c.RawFragment = "", ""
	return c.String()
}
