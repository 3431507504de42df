package etcdstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// probeTimeout bounds the TLS probe of one endpoint (dial, handshake and
// the wait for the server's first bytes).
const probeTimeout = 3 * time.Second

// explainTLS is called when Open failed with err because etcd did not
// answer. etcd's client retries a failed TLS handshake quietly until the
// request's deadline, so all err says is "context deadline exceeded":
// explainTLS dials every https:// endpoint itself with the same TLS
// configuration, and when a handshake fails it returns an error naming the
// endpoint and the reason (unknown authority, name mismatch, client
// certificate refused...), still wrapping err. It returns err as it is
// when every handshake succeeds or no endpoint uses TLS.
func explainTLS(endpoints []string, cfg *tls.Config, err error) error {
	failures := make([]error, len(endpoints))
	var wg sync.WaitGroup
	for i, ep := range endpoints {
		u, perr := url.Parse(ep)
		if perr != nil || u.Scheme != "https" || u.Host == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			failures[i] = probeTLS(u.Host, cfg)
		}()
	}
	wg.Wait()
	var msgs []string
	for i, f := range failures {
		if f != nil {
			msgs = append(msgs, fmt.Sprintf("TLS handshake with etcd endpoint %s failed: %v", endpoints[i], f))
		}
	}
	if len(msgs) == 0 {
		return err
	}
	return fmt.Errorf("etcdstore: %s (%w)", strings.Join(msgs, "; "), err)
}

// probeTLS dials host (host:port) and completes a TLS handshake with cfg
// (nil: the system's roots, as etcd's client does for https:// URLs),
// checking the server's name as gRPC does. With TLS 1.3 a server that
// refuses the client's certificate says so only after the handshake, so
// probeTLS also waits for the server's first bytes (an HTTP/2 server
// sends its settings at once): an alert then is a failure too; silence
// until the deadline is not.
func probeTLS(host string, cfg *tls.Config) error {
	c := &tls.Config{}
	if cfg != nil {
		c = cfg.Clone()
	}
	if c.ServerName == "" {
		name := host
		if h, _, err := net.SplitHostPort(host); err == nil {
			name = h
		}
		c.ServerName = name
	}
	c.NextProtos = []string{"h2"}
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	conn, err := (&tls.Dialer{Config: c}).DialContext(ctx, "tcp", host)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() || isDialError(err) {
			return nil // not a TLS problem: etcd is just not there
		}
		return err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetReadDeadline(deadline)
	var b [1]byte
	if _, err := conn.Read(b[:]); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
			return nil
		}
		if strings.Contains(err.Error(), "tls:") {
			return err
		}
	}
	return nil
}

// isDialError reports whether err happened before any TLS was spoken
// (connection refused, no route...).
func isDialError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}
