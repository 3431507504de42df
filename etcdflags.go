package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
)

// The cluster mode's settings: -etcd and the flags that go with it, checked,
// and the TLS configuration they make for the connections to etcd.

// parseEtcd checks -etcd and its companions and fills c.etcdEndpoints: each
// URL must be http:// or https:// with a host and nothing after it, the
// TLS flags need -etcd and https:// URLs (etcd's client would send plain
// text to an http:// URL whatever they say), and -etcd-cert and -etcd-key
// go together.
func (c *config) parseEtcd() error {
	c.etcdEndpoints = nil
	for _, u := range strings.Split(c.etcd, ",") {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || (p.Path != "" && p.Path != "/") || p.RawQuery != "" || p.User != nil {
			return fmt.Errorf("-etcd %q: want client URLs such as http://10.0.0.1:2379, comma-separated", u)
		}
		c.etcdEndpoints = append(c.etcdEndpoints, u)
	}
	if c.etcd != "" && len(c.etcdEndpoints) == 0 {
		return fmt.Errorf("-etcd %q: no URL", c.etcd)
	}
	tlsFlags := c.etcdCA != "" || c.etcdCert != "" || c.etcdKey != ""
	if tlsFlags && len(c.etcdEndpoints) == 0 {
		return errors.New("-etcd-ca, -etcd-cert and -etcd-key need -etcd")
	}
	if (c.etcdCert == "") != (c.etcdKey == "") {
		return errors.New("-etcd-cert and -etcd-key go together")
	}
	if tlsFlags {
		for _, u := range c.etcdEndpoints {
			if !strings.HasPrefix(u, "https://") {
				return fmt.Errorf("-etcd %q: TLS to etcd (-etcd-ca, -etcd-cert) needs https:// URLs", u)
			}
		}
	}
	if c.etcdMember < 100*time.Millisecond || c.etcdMember > 4*time.Second {
		// Below, a busy member would pass for a silent one; above, a
		// silent one would cost more than the 4 s a watch may stall.
		return fmt.Errorf("-etcd-member-timeout %v: want 100ms to 4s", c.etcdMember)
	}
	if c.etcdPrefix == "" || !strings.HasPrefix(c.etcdPrefix, "/") {
		return fmt.Errorf("-etcd-prefix %q: must begin with /", c.etcdPrefix)
	}
	return nil
}

// etcdTLS is the TLS configuration for etcd: nil when no TLS flag is set
// (https:// URLs then check etcd's certificate against the system's
// roots). It fails when a file cannot be read or holds no usable PEM.
func (c *config) etcdTLS() (*tls.Config, error) {
	if c.etcdCA == "" && c.etcdCert == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.etcdCA != "" {
		pem, err := os.ReadFile(c.etcdCA)
		if err != nil {
			return nil, fmt.Errorf("-etcd-ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-etcd-ca %s: no PEM certificate in it", c.etcdCA)
		}
	}
	if c.etcdCert != "" {
		pair, err := tls.LoadX509KeyPair(c.etcdCert, c.etcdKey)
		if err != nil {
			return nil, fmt.Errorf("-etcd-cert, -etcd-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}
