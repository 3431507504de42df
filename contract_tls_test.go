package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestTLS serves HTTPS with a certificate the test makes for 127.0.0.1:
// join, the event stream, posts and long-poll work over it, HTTP/2 is
// negotiated (and carries both members' streams and their posts on one
// connection), HTTP/1.1 over TLS works too, and plain HTTP on the TLS port
// is refused with a 4xx.
func TestTLS(t *testing.T) {
	cert := selfSignedCert(t)
	srv := newTestServer(t, withTLS(cert), withFlags("-heartbeat", "200ms"))
	if !strings.HasPrefix(srv.URL(), "https://127.0.0.1:") {
		t.Fatalf("server URL %q, want https://127.0.0.1:…", srv.URL())
	}

	t.Run("h2", func(t *testing.T) {
		rec := &protoRecorder{rt: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cert.roots}, ForceAttemptHTTP2: true}}
		t.Cleanup(rec.rt.(*http.Transport).CloseIdleConnections)
		hc := &http.Client{Transport: rec}
		resp, err := hc.Get(srv.URL() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.TLS == nil || resp.TLS.NegotiatedProtocol != "h2" || resp.TLS.Version < tls.VersionTLS12 {
			t.Fatalf("GET /healthz over TLS: %s, ALPN %q, TLS version %x; want HTTP/2 (h2)", resp.Proto, resp.TLS.NegotiatedProtocol, resp.TLS.Version)
		}
		tlsConversation(t, srv.via(hc), "h2room")
		if protos := rec.protos(); len(protos) != 1 || protos["HTTP/2.0"] == 0 {
			t.Fatalf("answers came as %v, want all HTTP/2.0", protos)
		}
		if rec.conns() != 1 {
			t.Errorf("the requests used %d connections, want one HTTP/2 connection", rec.conns())
		}
	})

	t.Run("http1.1", func(t *testing.T) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cert.roots}, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
		t.Cleanup(tr.CloseIdleConnections)
		rec := &protoRecorder{rt: tr}
		tlsConversation(t, srv.via(&http.Client{Transport: rec}), "h1room")
		if protos := rec.protos(); len(protos) != 1 || protos["HTTP/1.1"] == 0 {
			t.Fatalf("answers came as %v, want all HTTP/1.1", protos)
		}
	})

	t.Run("plain HTTP on the TLS port", func(t *testing.T) {
		conn, err := net.Dial("tcp", srv.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("plain HTTP to the TLS port: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 400 {
			t.Fatalf("plain HTTP to the TLS port: %d %q, want 400", resp.StatusCode, body)
		}
	})

	t.Run("untrusted certificate", func(t *testing.T) {
		tr := &http.Transport{ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		_, err := (&http.Client{Transport: tr}).Get(srv.URL() + "/healthz")
		var verr *tls.CertificateVerificationError
		if !errors.As(err, &verr) {
			t.Fatalf("a client without the test's root: %v, want a certificate verification error", err)
		}
	})
}

// tlsConversation is a short call setup through e: two joins, both event
// streams open, an offer and an answer, a heartbeat, and a long-poll.
func tlsConversation(t *testing.T, e *endpoint, room string) {
	alice := e.join(t, room, 201)
	bob := e.join(t, room, 201)
	sa := alice.events(t, "")
	sb := bob.events(t, "")
	var offer uint64

	phase(t, "both streams open with their ready frame, alice's with bob's peer-joined", func(t *testing.T) {
		for _, s := range []*stream{sa, sb} {
			if f, ok := s.nextWithin(5 * time.Second); !ok || f.Event != "ready" {
				t.Fatalf("no ready frame over TLS: %+v", f)
			}
		}
		if f, ok := sa.nextWithin(5 * time.Second); !ok || decodeMessage(t, f.Data)["type"] != "peer-joined" {
			t.Fatalf("alice's peer-joined: %+v", f)
		}
	})
	phase(t, "the offer and the answer arrive", func(t *testing.T) {
		offer = bob.post(t, `{"type":"offer","sdp":"v=0 over TLS"}`)
		if f, ok := sa.nextWithin(5 * time.Second); !ok || f.ID != fmt.Sprint(offer) {
			t.Fatalf("alice did not get the offer %d over TLS: %+v", offer, f)
		}
		ans := alice.post(t, `{"type":"answer","sdp":"v=0 over TLS"}`)
		if f, ok := sb.nextWithin(5 * time.Second); !ok || f.ID != fmt.Sprint(ans) {
			t.Fatalf("bob did not get the answer %d over TLS: %+v", ans, f)
		}
	})
	phase(t, "heartbeats are flushed", func(t *testing.T) {
		comments := 0
		for deadline := time.After(5 * time.Second); comments == 0; {
			select {
			case f, ok := <-sa.frames:
				if !ok {
					t.Fatal("alice's stream ended")
				}
				if f.Comment {
					comments++
				}
			case <-deadline:
				t.Fatal("no heartbeat over TLS within 5s (-heartbeat 200ms)")
			}
		}
	})
	phase(t, "a waiting long-poll is answered by the next message", func(t *testing.T) {
		// alice waits after the offer; bob's candidate answers her.
		polled := make(chan answer, 1)
		go func() {
			a, _ := alice.longPoll(context.Background(), offer, "10")
			polled <- a
		}()
		time.Sleep(100 * time.Millisecond)
		candidate := bob.post(t, `{"type":"candidate","candidate":null}`)
		select {
		case a := <-polled:
			p, err := a.decodePoll()
			if a.Status != 200 || err != nil || len(p.Messages) != 1 || idOf(p.Messages[0]) != candidate {
				t.Fatalf("long-poll over TLS: %d %s", a.Status, a.Body)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("long-poll over TLS was not answered")
		}
	})
}

// testCert is a certificate made by a test and its key, in files, and the
// pool of roots that trusts it.
type testCert struct {
	certFile, keyFile string
	roots             *x509.CertPool
}

// withTLS serves HTTPS with cert; the server's endpoint gets a client that
// trusts it (HTTP/1.1: a Transport with its own TLS config does not try
// HTTP/2 unless told to).
func withTLS(cert testCert) serverOption {
	return func(c *serverConfig) {
		c.flags = append(c.flags, "-tls-cert", cert.certFile, "-tls-key", cert.keyFile)
		c.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cert.roots}}}
	}
}

// selfSignedCert writes a certificate for 127.0.0.1, ::1 and localhost,
// and its key, into a temp dir.
func selfSignedCert(t *testing.T) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "tincan test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return testCert{certFile: certFile, keyFile: keyFile, roots: roots}
}

// An HTTP/2 stream that has nothing to send outlives the stall timeout: the
// write deadline covers a frame being written, not the time between frames
// (HTTP/2 resets a stream whose deadline passes, writing or not).
func TestH2IdleStream(t *testing.T) {
	cert := selfSignedCert(t)
	srv := newTestServer(t, withTLS(cert), withFlags("-heartbeat", "1h", "-stall-timeout", "300ms"))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cert.roots}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	h2 := srv.via(&http.Client{Transport: tr})
	a := h2.join(t, "h2idle", 201)
	b := h2.join(t, "h2idle", 201)
	s := b.events(t, "")
	s.ready(t)
	time.Sleep(1500 * time.Millisecond) // five stall timeouts without a frame
	id := a.post(t, `{"type":"late"}`)
	if m := s.message(t); idOf(m) != id {
		t.Fatalf("after an idle spell the stream gave %v, want message %d", m, id)
	}
}

// A stream over HTTP/1.1 and TLS is hijacked like a plain one: its reader's
// hang-up is noticed on the TCP connection under TLS. With one stream
// allowed per address and an hour between heartbeats, each new stream needs
// the hang-up of the previous one to have been noticed.
func TestTLSHangUp(t *testing.T) {
	cert := selfSignedCert(t)
	srv := newTestServer(t, withTLS(cert), withFlags("-heartbeat", "1h", "-max-streams-per-ip", "1"))
	srv.join(t, "tlshang", 201)
	b := srv.join(t, "tlshang", 201)
	for i := range 3 {
		conn, r, status := openTLSStream(t, srv, cert.roots, b.Token)
		// 429 while the previous stream still counts: its hang-up has not
		// been noticed yet.
		for deadline := time.Now().Add(30 * time.Second); strings.HasPrefix(status, "HTTP/1.1 429"); {
			conn.Close()
			if time.Now().After(deadline) {
				t.Fatalf("stream %d: the previous stream's hang-up was not noticed within 30 s", i)
			}
			time.Sleep(20 * time.Millisecond)
			conn, r, status = openTLSStream(t, srv, cert.roots, b.Token)
		}
		if !strings.HasPrefix(status, "HTTP/1.1 200") {
			t.Fatalf("stream %d: status line %q", i, status)
		}
		for line := ""; !strings.HasPrefix(line, "event: ready"); {
			var err error
			if line, err = r.ReadString('\n'); err != nil {
				t.Fatalf("stream %d before its ready frame: %v", i, err)
			}
		}
		conn.Close()
	}
}

// openTLSStream opens an event stream of token's room "tlshang" on its own
// HTTP/1.1 connection over TLS and reads the status line.
func openTLSStream(t *testing.T, srv *testServer, roots *x509.CertPool, token string) (*tls.Conn, *bufio.Reader, string) {
	t.Helper()
	conn, err := tls.Dial("tcp", srv.addr(), &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(conn, "GET /rooms/tlshang/events?token=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", token)
	r := bufio.NewReader(conn)
	status, _ := r.ReadString('\n')
	return conn, r, status
}

// protoRecorder notes the protocol of every answer and the connections used.
type protoRecorder struct {
	rt    http.RoundTripper
	mu    sync.Mutex
	seen  map[string]int
	local map[string]bool
}

func (r *protoRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	var local string
	trace := req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { local = info.Conn.LocalAddr().String() },
	}))
	resp, err := r.rt.RoundTrip(trace)
	if err == nil {
		r.mu.Lock()
		if r.seen == nil {
			r.seen, r.local = map[string]int{}, map[string]bool{}
		}
		r.seen[resp.Proto]++
		r.local[local] = true
		r.mu.Unlock()
	}
	return resp, err
}

func (r *protoRecorder) protos() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen
}

func (r *protoRecorder) conns() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.local)
}
