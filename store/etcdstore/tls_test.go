package etcdstore

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tincan/tincan/store"
	"github.com/tincan/tincan/store/etcdstore/etcdtest"
)

// Options.TLS reaches etcd: an etcd that requires client certificates
// takes the engine with one, and refuses it without.
func TestTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, caKey := newCert(t, nil, nil, "test CA", true)
	server, serverKey := newCert(t, ca, caKey, "etcd", false)
	client, clientKey := newCert(t, ca, caKey, "tincan", false)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.Raw)
	writePEM(t, filepath.Join(dir, "server.pem"), "CERTIFICATE", server.Raw)
	writeKey(t, filepath.Join(dir, "server-key.pem"), serverKey)
	etcd := etcdtest.Start(t, etcdtest.Config{
		Members:      1,
		CertFile:     filepath.Join(dir, "server.pem"),
		KeyFile:      filepath.Join(dir, "server-key.pem"),
		ClientCAFile: filepath.Join(dir, "ca.pem"),
	})
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	open := func(cfg *tls.Config) (*Store, error) {
		ctx, cancel := context.WithTimeout(ctx0, 10*time.Second)
		defer cancel()
		return Open(ctx, Options{Endpoints: etcd.Endpoints(), TLS: cfg, Prefix: "/tls/", RequestTimeout: 2 * time.Second})
	}

	s, err := open(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{{Certificate: [][]byte{client.Raw}, PrivateKey: clientKey}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, b := mustJoin(t, s, "r"), mustJoin(t, s, "r")
	id := mustPost(t, s, store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}}).ID
	if msgs := mustRead(t, s, b.Member, 0); len(msgs) != 1 || msgs[0].ID != id {
		t.Fatalf("b reads %v over TLS, want [%d]", idsOf(msgs), id)
	}

	s2, err := open(&tls.Config{RootCAs: roots})
	if err == nil {
		s2.Close()
		t.Fatal("an etcd that requires client certificates took the engine without one")
	}
	checkTLSError(t, err, etcd.Endpoints(), "certificate")
}

// A TLS handshake that fails (etcd's certificate signed by another CA, or
// checked against the system's roots for want of -etcd-ca) makes Open say
// so, naming the endpoint and the reason, rather than only "context
// deadline exceeded". Nothing here measures time: Open fails after its
// RequestTimeout however fast the machine, and only its message is checked.
func TestTLSHandshakeFailure(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, caKey := newCert(t, nil, nil, "test CA", true)
	other, _ := newCert(t, nil, nil, "another CA", true)
	server, serverKey := newCert(t, ca, caKey, "etcd", false)
	writePEM(t, filepath.Join(dir, "server.pem"), "CERTIFICATE", server.Raw)
	writeKey(t, filepath.Join(dir, "server-key.pem"), serverKey)
	etcd := etcdtest.Start(t, etcdtest.Config{
		Members:  1,
		CertFile: filepath.Join(dir, "server.pem"),
		KeyFile:  filepath.Join(dir, "server-key.pem"),
	})
	wrong := x509.NewCertPool()
	wrong.AddCert(other)
	for name, cfg := range map[string]*tls.Config{
		"wrong CA": {RootCAs: wrong},
		"no CA":    nil, // the system's roots
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(ctx0, 30*time.Second)
			defer cancel()
			s, err := Open(ctx, Options{Endpoints: etcd.Endpoints(), TLS: cfg, Prefix: "/tls/", RequestTimeout: time.Second})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded with a CA that did not sign etcd's certificate")
			}
			checkTLSError(t, err, etcd.Endpoints(), "unknown authority")
			if !errors.Is(err, store.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Open's error %q no longer wraps the unavailability", err)
			}
		})
	}
}

// checkTLSError fails t unless err says that the TLS handshake with each
// endpoint failed, and why (reason).
func checkTLSError(t *testing.T, err error, endpoints []string, reason string) {
	t.Helper()
	msg := err.Error()
	t.Logf("Open: %v", msg)
	for _, want := range append([]string{"TLS handshake", reason}, endpoints...) {
		if !strings.Contains(msg, want) {
			t.Errorf("Open's error %q does not mention %q", msg, want)
		}
	}
}

// newCert makes a certificate for 127.0.0.1 signed by parent (self-signed
// without one).
func newCert(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, name string, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:         isCA,

		BasicConstraintsValid: true,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func writePEM(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeKey(t *testing.T, path string, key *ecdsa.PrivateKey) {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, path, "EC PRIVATE KEY", der)
}
