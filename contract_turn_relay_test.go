package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// relayConfig turns a join answer's ice_servers into a relay-only
// configuration: the call can only connect through the TURN server.
func relayConfig(t *testing.T, c *client) webrtc.Configuration {
	t.Helper()
	cfg := webrtc.Configuration{ICETransportPolicy: webrtc.ICETransportPolicyRelay}
	for _, raw := range c.ICEServers {
		var s webrtc.ICEServer
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatalf("ice server %s: %v", raw, err)
		}
		cfg.ICEServers = append(cfg.ICEServers, s)
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

	peers := srv.via(hc) // the peers' own connections, closed at the end
	ca := peers.join(t, "relayed", 201)
	cb := peers.join(t, "relayed", 201)
	var turnURLs int
	for _, raw := range cb.ICEServers {
		if strings.Contains(string(raw), "turn:127.0.0.1:") && strings.Contains(string(raw), `"credential"`) {
			turnURLs++
		}
	}
	if turnURLs != 1 {
		t.Fatalf("join answer lacks the embedded TURN server with credentials: %s", cb.ICEServers)
	}
	a := newRTCPeer("A", "sse", ca, errs)
	a.config = relayConfig(t, ca)
	b := newRTCPeer("B", "poll", cb, errs)
	b.config = relayConfig(t, cb)
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
