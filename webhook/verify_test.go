package webhook_test

// A Standard Webhooks verifier written from the spec
// (standard-webhooks/standard-webhooks, spec/standard-webhooks.md), not
// from the package: the receiver of the tests checks every request with it.

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
)

// specKey is the key of a secret: base64 after "whsec_".
func specKey(secret string) ([]byte, bool) {
	enc := strings.TrimPrefix(secret, "whsec_")
	if k, err := base64.StdEncoding.DecodeString(enc); err == nil {
		return k, true
	}
	k, err := base64.RawStdEncoding.DecodeString(enc)
	return k, err == nil
}

// verifyEntry says whether the signature entry "v1,<base64>" is the
// HMAC-SHA256 of "id.timestamp.body" under secret.
func verifyEntry(t testing.TB, secret, id, timestamp string, body []byte, entry string) bool {
	t.Helper()
	key, ok := specKey(secret)
	if !ok {
		t.Fatalf("the test's verifier cannot read secret %q", secret)
	}
	version, sig, ok := strings.Cut(entry, ",")
	if !ok || version != "v1" {
		return false
	}
	got, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + timestamp + "." + string(body)))
	return hmac.Equal(got, mac.Sum(nil))
}

// verifyHeader says whether some entry of the space-separated header
// verifies under secret.
func verifyHeader(t testing.TB, secret, id, timestamp string, body []byte, header string) bool {
	for _, e := range strings.Fields(header) {
		if verifyEntry(t, secret, id, timestamp, body, e) {
			return true
		}
	}
	return false
}
