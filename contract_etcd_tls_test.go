package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tincan/tincan/store/etcdstore/etcdtest"
)

// Issue #19: tincan started with -etcd-ca of a CA that did not sign etcd's
// certificate does not start, and its error says that the TLS handshake
// with the etcd endpoint failed and why, not only "context deadline
// exceeded". Only the message is checked; the minute is a bound for a
// hung start, not a measure of speed.
func TestEtcdTLSWrongCA(t *testing.T) {
	pki, other := newTestPKI(t), newTestPKI(t)
	etcd := etcdtest.Start(t, etcdtest.Config{Members: 1, CertFile: pki.serverCert, KeyFile: pki.serverKey})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"tincan", "-addr", "127.0.0.1:0", "-turn=false", "-etcd", etcd.Endpoint(0), "-etcd-ca", other.caFile},
		func(string) string { return "" }, &stdout, &stderr)
	if err == nil || ctx.Err() != nil || stdout.Len() > 0 {
		t.Fatalf("run with another CA returned %v and printed %q (context: %v)", err, stdout.String(), ctx.Err())
	}
	t.Logf("refused: %v", err)
	for _, want := range []string{"TLS handshake", "certificate signed by unknown authority", etcd.Endpoint(0)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("run's error %q does not mention %q", err, want)
		}
	}
}
