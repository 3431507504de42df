package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tincan/tincan/store/etcdstore/etcdtest"
)

// Tests of cluster mode run in this process: the -etcd flags and their
// environment twins, and TLS to etcd.

func TestEtcdFlags(t *testing.T) {
	t.Run("the environment twins set them, a flag wins", func(t *testing.T) {
		env := map[string]string{
			"TINCAN_ETCD":        "http://10.0.0.1:2379, http://10.0.0.2:2379,http://10.0.0.3:2379",
			"TINCAN_ETCD_PREFIX": "/staging/",
		}
		cfg, err := parseFlags([]string{"tincan"}, func(k string) string { return env[k] }, nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379"}; !slices.Equal(cfg.etcdEndpoints, want) || cfg.etcdPrefix != "/staging/" {
			t.Fatalf("from the environment: endpoints %q prefix %q, want %q /staging/", cfg.etcdEndpoints, cfg.etcdPrefix, want)
		}
		cfg, err = parseFlags([]string{"tincan", "-etcd", "http://127.0.0.1:2379", "-etcd-prefix", "/prod/"}, func(k string) string { return env[k] }, nil)
		if err != nil || !slices.Equal(cfg.etcdEndpoints, []string{"http://127.0.0.1:2379"}) || cfg.etcdPrefix != "/prod/" {
			t.Fatalf("flags over the environment: %v %q %q", err, cfg.etcdEndpoints, cfg.etcdPrefix)
		}
		env = map[string]string{"TINCAN_ETCD": "https://e1:2379", "TINCAN_ETCD_CA": "ca.pem", "TINCAN_ETCD_CERT": "c.pem", "TINCAN_ETCD_KEY": "k.pem"}
		cfg, err = parseFlags([]string{"tincan"}, func(k string) string { return env[k] }, nil)
		if err != nil || cfg.etcdCA != "ca.pem" || cfg.etcdCert != "c.pem" || cfg.etcdKey != "k.pem" {
			t.Fatalf("TLS twins: %v %+v", err, cfg)
		}
	})
	t.Run("unset, the engine is the bbolt file", func(t *testing.T) {
		cfg, err := parseFlags([]string{"tincan"}, func(string) string { return "" }, nil)
		if err != nil || cfg.etcdEndpoints != nil || cfg.etcdPrefix != "/tincan/" || cfg.db != "tincan.db" {
			t.Fatalf("defaults: %v endpoints %q prefix %q db %q", err, cfg.etcdEndpoints, cfg.etcdPrefix, cfg.db)
		}
	})
	t.Run("wrong settings are refused", func(t *testing.T) {
		for _, args := range [][]string{
			{"-etcd", "10.0.0.1:2379"},                          // no scheme
			{"-etcd", "unix:///run/etcd.sock"},                  // not http(s)
			{"-etcd", "http://10.0.0.1:2379/v3/kv"},             // a path
			{"-etcd", " , "},                                    // no URL
			{"-etcd-ca", "ca.pem"},                              // TLS without -etcd
			{"-etcd", "http://e1:2379", "-etcd-ca", "ca.pem"},   // TLS flags with plain-text URLs
			{"-etcd", "https://e1:2379", "-etcd-cert", "c.pem"}, // a certificate without its key
			{"-etcd", "https://e1:2379", "-etcd-prefix", "tincan"},
		} {
			if _, err := parseFlags(append([]string{"tincan"}, args...), func(string) string { return "" }, nil); err == nil {
				t.Errorf("%q accepted", args)
			}
		}
	})
	t.Run("the TLS files are read at start", func(t *testing.T) {
		cert := selfSignedCert(t)
		cfg := config{etcdCA: cert.certFile, etcdCert: cert.certFile, etcdKey: cert.keyFile}
		tc, err := cfg.etcdTLS()
		if err != nil || tc == nil || tc.RootCAs == nil || len(tc.Certificates) != 1 {
			t.Fatalf("etcdTLS: %v %+v", err, tc)
		}
		if tc, err := (&config{}).etcdTLS(); tc != nil || err != nil {
			t.Fatalf("no TLS flag: %+v %v, want no TLS configuration (https:// URLs use the system's roots)", tc, err)
		}
		var stdout, stderr bytes.Buffer
		err = run(context.Background(), []string{"tincan", "-addr", "127.0.0.1:0", "-turn=false", "-etcd", "https://127.0.0.1:1", "-etcd-ca", cert.keyFile},
			func(string) string { return "" }, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), "-etcd-ca") || stdout.Len() > 0 {
			t.Fatalf("a CA file without a certificate: run returned %v and printed %q", err, stdout.String())
		}
	})
	t.Run("-h lists them", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), []string{"tincan", "-h"}, func(string) string { return "" }, &stdout, &stderr); err != nil {
			t.Fatal(err)
		}
		for _, flag := range []string{"-etcd ", "-etcd-prefix", "-etcd-ca", "-etcd-cert", "-etcd-key"} {
			if !strings.Contains(stderr.String(), "  "+flag) {
				t.Errorf("-h does not list %s:\n%s", flag, stderr.String())
			}
		}
	})
}

// With TLS to etcd (-etcd-ca, -etcd-cert, -etcd-key against a member that
// requires client certificates), the server runs on etcd and leaves its
// -db file alone; without a client certificate it does not start.
func TestEtcdTLS(t *testing.T) {
	pki := newTestPKI(t)
	etcd := etcdtest.Start(t, etcdtest.Config{Members: 1, CertFile: pki.serverCert, KeyFile: pki.serverKey, ClientCAFile: pki.caFile})
	if !strings.HasPrefix(etcd.Endpoint(0), "https://") {
		t.Fatalf("etcd's endpoint %s is not https", etcd.Endpoint(0))
	}

	t.Run("with a client certificate it serves, on etcd alone", func(t *testing.T) {
		srv := newTestServer(t, withFlags("-etcd", etcd.Endpoint(0), "-etcd-prefix", "/tls/",
			"-etcd-ca", pki.caFile, "-etcd-cert", pki.clientCert, "-etcd-key", pki.clientKey))
		a := srv.join(t, "tls", 201)
		b := srv.join(t, "tls", 201)
		id := a.post(t, `{"type":"x"}`)
		if p := b.poll(t, 0, "5"); len(p.Messages) != 1 || idOf(p.Messages[0]) != id {
			t.Fatalf("poll over etcd: %+v, want the post %d", p, id)
		}
		for i, arg := range srv.argv {
			if arg == "-db" {
				if _, err := os.Stat(srv.argv[i+1]); !os.IsNotExist(err) {
					t.Fatalf("with -etcd the server touched its -db file: %v", err)
				}
			}
		}
	})
	t.Run("without one it does not start", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var stdout, stderr bytes.Buffer
		err := run(ctx, []string{"tincan", "-addr", "127.0.0.1:0", "-turn=false", "-etcd", etcd.Endpoint(0), "-etcd-ca", pki.caFile},
			func(string) string { return "" }, &stdout, &stderr)
		if err == nil || ctx.Err() != nil || stdout.Len() > 0 {
			t.Fatalf("run without a client certificate returned %v and printed %q (context: %v)", err, stdout.String(), ctx.Err())
		}
		t.Logf("refused: %v", err)
	})
}

// testPKI is a CA, a server certificate it signed for 127.0.0.1 and a
// client certificate it signed, as PEM files in a temp dir.
type testPKI struct {
	caFile                string
	serverCert, serverKey string
	clientCert, clientKey string
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	write := func(name, kind string, der []byte) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	newKey := func() *ecdsa.PrivateKey {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return key
	}
	template := func(name string) *x509.Certificate {
		serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
		return &x509.Certificate{
			SerialNumber: serial,
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
		}
	}
	caKey := newKey()
	caTmpl := template("tincan test CA")
	caTmpl.IsCA, caTmpl.BasicConstraintsValid, caTmpl.KeyUsage = true, true, x509.KeyUsageCertSign|x509.KeyUsageDigitalSignature
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
		t.Helper()
		key := newKey()
		tmpl := template(name)
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{usage}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "PRIVATE KEY", keyDER)
	}
	p := testPKI{caFile: write("ca.pem", "CERTIFICATE", caDER)}
	p.serverCert, p.serverKey = leaf("etcd", x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf("tincan", x509.ExtKeyUsageClientAuth)
	return p
}
