package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
)

// Tests of cluster mode run in this process: the -etcd flags and their
// environment twins.

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
