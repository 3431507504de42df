package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	tincan "github.com/tincan/tincan/client"
)

// relayConfig turns a join answer's ice_servers into a relay-only
// configuration: the call can only connect through the TURN server.
func relayConfig(m *tincan.Member) webrtc.Configuration {
	cfg := webrtc.Configuration{ICETransportPolicy: webrtc.ICETransportPolicyRelay}
	for _, s := range m.ICEServers {
		cfg.ICEServers = append(cfg.ICEServers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	return cfg
}

// Two pion peers that may use only the ice_servers of their join answers,
// relayed only, connect through the embedded TURN server and echo over a
// data channel.
func TestTURNRelayedCall(t *testing.T) {
	srv := newTestServer(t, withFlags("-turn", "-turn-addr", "127.0.0.1:0", "-turn-public-ip", "127.0.0.1", "-turn-allow-loopback"))
	errs := make(chan error, 16)
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)

	peers, err := tincan.New(srv.URL(), tincan.WithHTTPClient(hc)) // the peers' own connections, closed at the end
	if err != nil {
		t.Fatal(err)
	}
	ca, err := peers.Join(context.Background(), "relayed", tincan.JoinOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cb, err := peers.Join(context.Background(), "relayed", tincan.JoinOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var turnURLs int
	for _, s := range cb.ICEServers {
		for _, u := range s.URLs {
			if strings.HasPrefix(u, "turn:127.0.0.1:") && s.Credential != "" {
				turnURLs++
			}
		}
	}
	if turnURLs != 2 { // ?transport=udp and ?transport=tcp
		t.Fatalf("join answer lacks the embedded TURN server with credentials: %+v", cb.ICEServers)
	}
	a := newMemberPeer("A", tincan.EventStream, ca, errs)
	a.config = relayConfig(ca)
	b := newMemberPeer("B", tincan.LongPoll, cb, errs)
	b.config = relayConfig(cb)
	a.other.Store(b.id)
	b.other.Store(a.id)
	a.start(0, false)
	defer a.stop()
	b.start(0, true)
	defer b.stop()

	started := time.Now()
	b.waitEcho(t, "ping B #1", errs)
	t.Logf("relayed call connected in %v", time.Since(started).Round(time.Millisecond))
	if n := srv.metric(t, "tincan_turn_allocations_created_total"); n < 2 {
		t.Fatalf("%v TURN allocations: the call did not go through the relay", n)
	}
}
