package webhook_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tincan/tincan/webhook"
)

// The Standard Webhooks test vector (the spec's libraries test it).
const (
	vectorID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTS     = 1614265330
	vectorSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorBody   = `{"test": 2432232314}`
	vectorSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestSignTestVector(t *testing.T) {
	s, err := webhook.ParseSecret(vectorSecret)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Sign(vectorID, vectorTS, []byte(vectorBody)); got != vectorSig {
		t.Errorf("Sign = %q, want %q", got, vectorSig)
	}
	// The test's own verifier agrees with the vector too.
	if !verifyEntry(t, vectorSecret, vectorID, "1614265330", []byte(vectorBody), vectorSig) {
		t.Error("the test's verifier refuses the spec's vector")
	}
}

func TestHeadersSignWithEverySecret(t *testing.T) {
	const other = "whsec_" + "c2Vjb25kIHNlY3JldCBvZiAyNCBieXRlcyEhISE=" // "second secret of 24 bytes!!!!"
	var secrets []webhook.Secret
	for _, raw := range []string{vectorSecret, other} {
		s, err := webhook.ParseSecret(raw)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, s)
	}
	h := http.Header{}
	webhook.Headers(h, secrets, vectorID, time.Unix(vectorTS, 0), []byte(vectorBody))
	if h.Get("Content-Type") != "application/json" || h.Get("webhook-id") != vectorID || h.Get("webhook-timestamp") != "1614265330" {
		t.Fatalf("headers %v", h)
	}
	entries := strings.Split(h.Get("webhook-signature"), " ")
	if len(entries) != 2 || entries[0] != vectorSig {
		t.Fatalf("webhook-signature %q: want two entries, the vector's first", h.Get("webhook-signature"))
	}
	if !verifyEntry(t, other, vectorID, "1614265330", []byte(vectorBody), entries[1]) {
		t.Errorf("the second entry %q does not verify with the second secret", entries[1])
	}
	if strings.Contains(secrets[0].String(), "MfKQ") {
		t.Errorf("Secret.String shows the key: %s", secrets[0])
	}
}

func TestParseSecretErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", `starts with "whsec_"`},
		{"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", `starts with "whsec_"`},
		{"WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", `starts with "whsec_"`},
		{"whsec_", "no key"},
		{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa$w", "not standard base64"},
		{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw=", "not standard base64"},
		{"whsec_MfKQ9r8GKYqrTwjU-D8ILPZIo2LaLaSw", "not standard base64"},
		{"whsec_c2hvcnQ=", "at least 24"},
	} {
		_, err := webhook.ParseSecret(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseSecret(%q) = %v, want an error saying %q", c.in, err, c.want)
			continue
		}
		if len(c.in) > 12 && strings.Contains(err.Error(), c.in[6:12]) {
			t.Errorf("ParseSecret(%q): the error repeats the secret: %v", c.in, err)
		}
	}
	// Padding is optional.
	if _, err := webhook.ParseSecret("whsec_c2Vjb25kIHNlY3JldCBvZiAyNCBieXRlcyEhISE"); err != nil {
		t.Errorf("unpadded: %v", err)
	}
}

func TestParseURL(t *testing.T) {
	for _, ok := range []string{
		"http://127.0.0.1:8080/hook", "https://example.com", "https://example.com/a/b?x=1", "http://[::1]:9/x", "HTTPS://Example.com/",
	} {
		if _, err := webhook.ParseURL(ok); err != nil {
			t.Errorf("ParseURL(%q): %v", ok, err)
		}
	}
	for _, c := range []struct{ in, want string }{
		{"", "no URL"},
		{"example.com/hook", "http or https"},
		{"ftp://example.com/", "http or https"},
		{"file:///etc/passwd", "http or https"},
		{"http:example.com", "write it as"},
		{"http:///path", "no host"},
		{"http://:80/path", "no host"},
		{"https://user:pass@example.com/", "user information"},
		{"https://user@example.com/", "user information"},
		{"https://example.com/#frag", "fragment"},
		{"https://example.com/#", "fragment"},
		{"http://example.com:99999/", "port"},
		{"http://exa mple.com/", "URL"},
		{"http://example.com/\x7f", "URL"},
	} {
		_, err := webhook.ParseURL(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseURL(%q) = %v, want an error saying %q", c.in, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "user:pass@") {
			t.Errorf("ParseURL(%q): the error shows the password: %v", c.in, err)
		}
	}
}

func FuzzParseSecret(f *testing.F) {
	for _, s := range []string{
		vectorSecret, "", "whsec_", "whsec_=", "whsec_====", "whsec_c2hvcnQ=", "whsec_\x00",
		"whsec_c2Vjb25kIHNlY3JldCBvZiAyNCBieXRlcyEhISE", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
		"whsec_" + strings.Repeat("A", 200), "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_ MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := webhook.ParseSecret(in)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "webhook: ") {
				t.Errorf("error without the package's prefix: %v", err)
			}
			if rest, ok := strings.CutPrefix(in, "whsec_"); ok && len(rest) >= 8 && strings.Contains(err.Error(), rest) {
				t.Errorf("the error repeats the secret: %v", err)
			}
			return
		}
		if !strings.HasPrefix(in, "whsec_") {
			t.Fatalf("accepted %q without whsec_", in)
		}
		// What it accepts signs as the test's own verifier expects.
		sig := s.Sign("msg_1", 42, []byte("{}"))
		if !verifyEntry(t, in, "msg_1", "42", []byte("{}"), sig) {
			t.Fatalf("secret %q: signature %q does not verify", in, sig)
		}
	})
}

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"http://127.0.0.1:8080/hook", "https://example.com", "https://u:p@example.com/", "https://example.com/#x",
		"http:///x", "http:x", "ftp://x/", "//example.com/x", "http://[::1]:0/", "http://a:65536/", "https://例え.jp/パス?q=1",
		"http://%41/", "http://a/%zz", " http://a/", "http://a/\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		u, err := webhook.ParseURL(in)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "webhook: ") {
				t.Errorf("error without the package's prefix: %v", err)
			}
			return
		}
		if u.Scheme != "http" && u.Scheme != "https" || u.Hostname() == "" || u.User != nil ||
			u.Fragment != "" || strings.Contains(in, "#") || u.Opaque != "" {
			t.Fatalf("accepted %q: %#v", in, u)
		}
		// What it accepts, a request can be made of, and reads back the same.
		if _, err := http.NewRequest(http.MethodPost, u.String(), nil); err != nil {
			t.Fatalf("accepted %q, but no request: %v", in, err)
		}
		again, err := url.Parse(u.String())
		if err != nil || again.Host != u.Host || again.Scheme != u.Scheme {
			t.Fatalf("accepted %q, reads back as %q (%v)", in, u.String(), err)
		}
	})
}
