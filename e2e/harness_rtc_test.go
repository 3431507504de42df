package e2e

// A pion peer that places a call through tincan with the Go client: it
// receives with Member.Receive (SSE or long-poll, resuming after the last
// id), posts its offer or answer with Member.Send, gathers its candidates
// before it signals (no trickle), and echoes over a data channel. Like the
// web page it tags its messages with sid (its PeerConnection) and tsid
// (the one they are meant for), so that what a dropped connection left
// behind is recognized and ignored.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"

	"github.com/tincan/tincan/client"
)

type rtcPeer struct {
	name      string
	transport client.Transport
	member    *client.Member
	other     atomic.Value         // the other peer's client id (string), set once it joined
	config    webrtc.Configuration // of every PeerConnection; none: host candidates only
	errs      chan error
	echoes    chan string         // what came back on the data channel this peer opened
	presence  chan map[string]any // server events
	lastID    uint64              // the last id received; the session's while it runs

	cancel context.CancelFunc
	wg     sync.WaitGroup
	// The session's goroutine's while it runs.
	pc             *webrtc.PeerConnection
	sid, remoteSid string
	offers         int
	stale          map[string]bool // PeerConnections of the other side that are gone
}

func newRTCPeer(name string, transport client.Transport, m *client.Member, errs chan error) *rtcPeer {
	return &rtcPeer{name: name, transport: transport, member: m, errs: errs,
		echoes: make(chan string, 16), presence: make(chan map[string]any, 16), stale: map[string]bool{}}
}

func (p *rtcPeer) fail(format string, args ...any) {
	select {
	case p.errs <- fmt.Errorf(p.name+": "+format, args...):
	default:
	}
}

// start begins a session: receive everything after since, and offer first
// when told to.
func (p *rtcPeer) start(since uint64, offer bool) {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel, p.lastID = cancel, since
	p.wg.Go(func() {
		if offer {
			if err := p.offer(ctx); err != nil {
				p.fail("offer: %v", err)
				return
			}
		}
		opts := &client.ReceiveOptions{Transport: p.transport, Since: since, Wait: 10 * time.Second,
			Hooks: client.Hooks{OnStale: func(id, cursor uint64) { p.fail("id %d after %d", id, cursor) }}}
		for msg, err := range p.member.Receive(ctx, opts) {
			if err != nil {
				p.fail("receive: %v", err)
				return
			}
			p.lastID = msg.ID
			var m map[string]any
			if err := msg.Decode(&m); err != nil {
				p.fail("message %s: %v", msg.Data, err)
				return
			}
			if err := p.onMessage(ctx, m); err != nil {
				p.fail("%v", err)
				return
			}
		}
	})
}

// stop ends the session and closes the PeerConnection.
func (p *rtcPeer) stop() {
	if p.cancel == nil {
		return
	}
	p.cancel()
	p.wg.Wait()
	p.cancel = nil
	p.dropPC()
}

func (p *rtcPeer) onMessage(ctx context.Context, m map[string]any) error {
	typ, _ := m["type"].(string)
	if m["from"] == nil && (typ == "peer-joined" || typ == "peer-left") {
		select {
		case p.presence <- m:
		default:
		}
		if typ == "peer-left" {
			return fmt.Errorf("unexpected %v", m)
		}
		if m["peer"] == p.other.Load() && m["resumed"] == true {
			p.dropPC() // the other side starts afresh
		}
		return nil
	}
	if m["from"] != p.other.Load() || (typ != "offer" && typ != "answer") {
		return fmt.Errorf("unexpected message %v", m)
	}
	sid, _ := m["sid"].(string)
	sdp, _ := m["sdp"].(string)
	if tsid, ok := m["tsid"].(string); (ok && tsid != p.sid) || p.stale[sid] {
		return nil // meant for, or sent by, a connection that is gone
	}
	if typ == "answer" {
		if p.pc == nil || p.pc.SignalingState() != webrtc.SignalingStateHaveLocalOffer {
			return nil // for an offer of a connection that is gone
		}
		p.remoteSid = sid
		return p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp})
	}
	p.dropPC()
	if err := p.newPC(); err != nil {
		return err
	}
	p.remoteSid = sid
	p.pc.OnDataChannel(func(dc *webrtc.DataChannel) {
		dc.OnMessage(func(msg webrtc.DataChannelMessage) { _ = dc.SendText("echo:" + string(msg.Data)) })
	})
	if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sdp}); err != nil {
		return err
	}
	answer, err := p.pc.CreateAnswer(nil)
	if err != nil {
		return err
	}
	return p.signal(ctx, answer)
}

// offer makes a connection with a data channel that pings once it opens.
func (p *rtcPeer) offer(ctx context.Context) error {
	if err := p.newPC(); err != nil {
		return err
	}
	p.offers++
	ping := fmt.Sprintf("ping %s #%d", p.name, p.offers)
	dc, err := p.pc.CreateDataChannel("echo", nil)
	if err != nil {
		return err
	}
	dc.OnOpen(func() {
		if err := dc.SendText(ping); err != nil {
			p.fail("send %q: %v", ping, err)
		}
	})
	dc.OnMessage(func(msg webrtc.DataChannelMessage) {
		select {
		case p.echoes <- string(msg.Data):
		default:
		}
	})
	offer, err := p.pc.CreateOffer(nil)
	if err != nil {
		return err
	}
	return p.signal(ctx, offer)
}

// signal sets desc as the local description, waits for the candidates,
// and sends the description with them.
func (p *rtcPeer) signal(ctx context.Context, desc webrtc.SessionDescription) error {
	gathered := webrtc.GatheringCompletePromise(p.pc)
	if err := p.pc.SetLocalDescription(desc); err != nil {
		return err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return nil
	}
	m := map[string]any{"type": desc.Type.String(), "sdp": p.pc.LocalDescription().SDP, "to": p.other.Load(), "sid": p.sid}
	if p.remoteSid != "" {
		m["tsid"] = p.remoteSid
	}
	if _, err := p.member.Send(ctx, m, nil); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

func (p *rtcPeer) newPC() error {
	var se webrtc.SettingEngine // loopback only, UDP4, no mDNS: nothing leaves the machine
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetInterfaceFilter(func(name string) bool {
		ifc, err := net.InterfaceByName(name)
		return err == nil && ifc.Flags&net.FlagLoopback != 0
	})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	pc, err := webrtc.NewAPI(webrtc.WithSettingEngine(se)).NewPeerConnection(p.config)
	if err != nil {
		return err
	}
	b := make([]byte, 4)
	rand.Read(b)
	p.pc, p.sid, p.remoteSid = pc, p.name+"-"+hex.EncodeToString(b), ""
	return nil
}

// dropPC closes the connection; what its other side sends later is stale.
func (p *rtcPeer) dropPC() {
	if p.pc == nil {
		return
	}
	p.pc.Close()
	if p.remoteSid != "" {
		p.stale[p.remoteSid] = true
	}
	p.pc, p.remoteSid = nil, ""
}

func (p *rtcPeer) waitEcho(t *testing.T, want string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case got := <-p.echoes:
			if got == "echo:"+want {
				return
			}
			t.Logf("%s: ignoring echo %q", p.name, got)
		case err := <-p.errs:
			t.Fatal(err)
		case <-timeout:
			t.Fatalf("%s: no echo of %q within 30s", p.name, want)
		}
	}
}

func (p *rtcPeer) waitPresence(t *testing.T) map[string]any {
	t.Helper()
	select {
	case ev := <-p.presence:
		return ev
	case err := <-p.errs:
		t.Fatal(err)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no server event within 30s", p.name)
	}
	return nil
}

// relayConfig is a relay-only configuration with the ICE servers of m's
// join answer.
func relayConfig(m *client.Member) webrtc.Configuration {
	cfg := webrtc.Configuration{ICETransportPolicy: webrtc.ICETransportPolicyRelay}
	for _, s := range m.ICEServers {
		cfg.ICEServers = append(cfg.ICEServers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	return cfg
}
