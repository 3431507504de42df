package turn

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
)

// relayPeer is a pion/webrtc peer that may only use relay candidates, from
// the ice_servers that Credentials issues for clientID, on loopback only.
func relayPeer(t *testing.T, cr Credentials, clientID string) *webrtc.PeerConnection {
	t.Helper()
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() && ip.To4() != nil })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeTCP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetICETimeouts(5*time.Second, 10*time.Second, time.Second)
	api := webrtc.NewAPI(webrtc.WithSettingEngine(se))

	var servers []webrtc.ICEServer
	for _, s := range cr.ICEServers(clientID) {
		servers = append(servers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{
		ICEServers:         servers,
		ICETransportPolicy: webrtc.ICETransportPolicyRelay,
	})
	if err != nil {
		t.Fatalf("NewPeerConnection: %v", err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// connectAndEcho connects an offerer and an answerer in-process (complete
// SDP, no trickle). The answerer echoes data channel messages. It returns
// the offerer's channel once open, or nil when the connection fails first.
func connectAndEcho(t *testing.T, offerer, answerer *webrtc.PeerConnection, wait time.Duration) *webrtc.DataChannel {
	t.Helper()
	answerer.OnDataChannel(func(dc *webrtc.DataChannel) {
		dc.OnMessage(func(msg webrtc.DataChannelMessage) {
			_ = dc.Send(msg.Data) // a failed echo shows as a missing reply
		})
	})
	dc, err := offerer.CreateDataChannel("echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	opened := make(chan struct{})
	dc.OnOpen(func() { close(opened) })
	failed := make(chan struct{})
	var once sync.Once
	offerer.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateFailed {
			once.Do(func() { close(failed) })
		}
	})

	offer, err := offerer.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(offerer)
	if err := offerer.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	waitGathered(t, gathered)
	if err := answerer.SetRemoteDescription(*offerer.LocalDescription()); err != nil {
		t.Fatal(err)
	}
	answer, err := answerer.CreateAnswer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered = webrtc.GatheringCompletePromise(answerer)
	if err := answerer.SetLocalDescription(answer); err != nil {
		t.Fatal(err)
	}
	waitGathered(t, gathered)
	if err := offerer.SetRemoteDescription(*answerer.LocalDescription()); err != nil {
		t.Fatal(err)
	}

	select {
	case <-opened:
		return dc
	case <-failed:
		return nil
	case <-time.After(wait):
		t.Fatalf("neither connected nor failed within %v", wait)
		return nil
	}
}

func waitGathered(t *testing.T, done <-chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("ICE gathering did not complete within 30s")
	}
}

// TestWebRTCRelayThroughEmbeddedServer connects two relay-only peers
// through the embedded server on loopback (AllowLoopback) with nothing
// but the ice_servers from Credentials, and echoes over a data channel.
func TestWebRTCRelayThroughEmbeddedServer(t *testing.T) {
	s, reg := startServer(t, func(c *Config) { c.AllowLoopback = true })
	cr := Credentials{Secret: testSecret, TTL: time.Hour, URLs: s.URLs()}
	offerer := relayPeer(t, cr, "peer-a")
	answerer := relayPeer(t, cr, "peer-b")

	dc := connectAndEcho(t, offerer, answerer, 60*time.Second)
	if dc == nil {
		t.Fatal("relayed connection failed")
	}
	got := make(chan string, 16)
	dc.OnMessage(func(msg webrtc.DataChannelMessage) { got <- string(msg.Data) })
	for _, want := range []string{"ping 1", "ping 2", "ping 3"} {
		if err := dc.SendText(want); err != nil {
			t.Fatal(err)
		}
		select {
		case g := <-got:
			if g != want {
				t.Fatalf("echo %q, want %q", g, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("no echo of %q within 20s", want)
		}
	}

	pair, err := offerer.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil {
		t.Fatalf("selected pair: %v %v", pair, err)
	}
	if pair.Local.Typ != webrtc.ICECandidateTypeRelay || pair.Remote.Typ != webrtc.ICECandidateTypeRelay {
		t.Errorf("selected pair %s, want relay to relay", pair)
	}
	if v := metric(t, reg, "tincan_turn_allocations_created_total"); v < 2 {
		t.Errorf("allocations_created_total = %v, want at least 2", v)
	}
	if v := metric(t, reg, "tincan_turn_relayed_bytes_total", "direction", "to_peer"); v == 0 {
		t.Error("relayed_bytes_total{to_peer} = 0")
	}
}

// TestWebRTCRelayToLoopbackRefused is the same call without AllowLoopback:
// the relays are on 127.0.0.1, the policy refuses the permissions, and ICE
// fails.
func TestWebRTCRelayToLoopbackRefused(t *testing.T) {
	s, reg := startServer(t, nil)
	cr := Credentials{Secret: testSecret, TTL: time.Hour, URLs: s.URLs()}
	offerer := relayPeer(t, cr, "peer-a")
	answerer := relayPeer(t, cr, "peer-b")

	if dc := connectAndEcho(t, offerer, answerer, 60*time.Second); dc != nil {
		t.Fatal("relayed connection to loopback succeeded without AllowLoopback")
	}
	if v := metric(t, reg, "tincan_turn_allocations_created_total"); v < 2 {
		t.Errorf("allocations_created_total = %v, want at least 2 (the relays themselves work)", v)
	}
	if v := metric(t, reg, "tincan_turn_peer_denied_total"); v == 0 {
		t.Error("peer_denied_total = 0: the call failed for another reason than the policy")
	}
}
