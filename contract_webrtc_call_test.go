package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
	"go.uber.org/goleak"

	tincan "github.com/tincan/tincan/client"
)

// TestWebRTCCall: two pion peers make a real call through the HTTP API on
// loopback (host candidates only, trickle ICE), one receiving by SSE, the
// other by long-poll (both with the Go client's Member.Receive, posting
// with Member.Send), and a data channel echoes. Then one of them drops
// everything, re-joins with its token (200, same id), resumes receiving from
// its last id, and offers again; the other one drops its stale connection on
// peer-joined {resumed:true}, answers, and the data channel echoes again.
//
// The peers tag their signaling messages like the web page does: sid is the
// sending PeerConnection, tsid the one it is meant for, so leftovers of the
// first call that the rejoiner gets on resume are recognized and ignored.
func TestWebRTCCall(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rejoin string // the peer that drops and re-joins: A (SSE) or B (long-poll)
	}{
		{"sse peer rejoins", "A"},
		{"poll peer rejoins", "B"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaks := goleak.IgnoreCurrent()
			t.Cleanup(func() { goleak.VerifyNone(t, leaks) }) // runs last: after the server stopped
			srv := newTestServer(t)
			room := "call-" + strings.ReplaceAll(tc.name, " ", "-")
			errs := make(chan error, 16)
			hc := &http.Client{Transport: &http.Transport{}}
			t.Cleanup(hc.CloseIdleConnections)
			peers, err := tincan.New(srv.URL(), tincan.WithHTTPClient(hc)) // the peers' own connections, closed at the end
			if err != nil {
				t.Fatal(err)
			}
			join := func(t *testing.T, opts tincan.JoinOptions, resumed bool) *tincan.Member {
				t.Helper()
				m, err := peers.Join(context.Background(), room, opts)
				if err != nil {
					t.Fatalf("join %s: %v", room, err)
				}
				if m.Resumed != resumed { // 200 for a resume, 201 for a new seat
					t.Fatalf("join %s: resumed %v, want %v: %+v", room, m.Resumed, resumed, m)
				}
				return m
			}
			var a, b *rtcPeer
			defer func() { // the sessions that the phases started
				for _, p := range []*rtcPeer{a, b} {
					if p != nil {
						p.stop()
					}
				}
			}()

			phase(t, "A joins first: not the initiator; it listens by SSE", func(t *testing.T) {
				ca := join(t, tincan.JoinOptions{}, false)
				if ca.Initiator {
					t.Fatalf("first joiner is initiator: %+v", ca)
				}
				a = newMemberPeer("A", tincan.EventStream, ca, errs)
				a.start(0, false)
			})
			phase(t, "B joins second: the initiator, with A as its peer; it offers and long-polls", func(t *testing.T) {
				cb := join(t, tincan.JoinOptions{}, false)
				if !cb.Initiator || !slices.Equal(cb.Peers, []string{a.id}) {
					t.Fatalf("second join answer %+v", cb)
				}
				b = newMemberPeer("B", tincan.LongPoll, cb, errs)
				a.other.Store(b.id)
				b.other.Store(a.id)
				b.start(0, true)
			})
			phase(t, "the call connects and the data channel echoes; A hears B's peer-joined", func(t *testing.T) {
				started := time.Now()
				b.waitEcho(t, "ping B #1", errs)
				t.Logf("first call connected in %v", time.Since(started).Round(time.Millisecond))
				if ev := a.waitPresence(t, errs); ev["type"] != "peer-joined" || ev["peer"] != b.id || ev["resumed"] != nil {
					t.Fatalf("A got server event %v, want peer-joined of B", ev)
				}
			})

			r, o := a, b
			if tc.rejoin == "B" {
				r, o = b, a
			}
			var last uint64 // the last id the rejoiner received before it dropped
			phase(t, "the rejoiner drops everything and resumes with its token", func(t *testing.T) {
				// It goes away without a word, like a reloaded page: stream
				// or poll, sender and PeerConnection are gone.
				r.stop()
				if last = r.lastID.Load(); last == 0 {
					t.Fatalf("%s received nothing before it dropped", r.name)
				}
				rc := join(t, tincan.JoinOptions{Token: r.member.Token}, true)
				if rc.ClientID != r.id || rc.Token != r.member.Token || !rc.Initiator || !slices.Equal(rc.Peers, []string{o.id}) {
					t.Fatalf("resume answer %+v, want client %s, initiator, peers [%s]", rc, r.id, o.id)
				}
				r.member = rc // the next session receives and sends as the resumed member
			})
			phase(t, "it offers again, the other drops its stale connection, and the call echoes again", func(t *testing.T) {
				started := time.Now()
				ping := fmt.Sprintf("ping %s #%d", r.name, r.offers.Load()+1)
				r.start(last, true)
				r.waitEcho(t, ping, errs)
				t.Logf("second call connected in %v", time.Since(started).Round(time.Millisecond))
				if ev := o.waitPresence(t, errs); ev["type"] != "peer-joined" || ev["peer"] != r.id || ev["resumed"] != true {
					t.Fatalf("%s got server event %v, want peer-joined of %s with resumed:true", o.name, ev, r.name)
				}
				if o.drops.Load() != 1 {
					t.Fatalf("%s dropped %d connections, want its stale one", o.name, o.drops.Load())
				}
				select {
				case err := <-errs:
					t.Fatal(err)
				default:
				}
				for _, p := range []*rtcPeer{a, b} {
					t.Logf("%s: received up to id %d, added %d remote candidates, ignored %d stale messages", p.name, p.lastID.Load(), p.added.Load(), p.ignored.Load())
				}
			})
		})
	}
}

// rtcAPI is a pion API that gathers only IPv4 UDP host candidates on the
// loopback interface, without mDNS: nothing leaves the machine.
func rtcAPI() *webrtc.API {
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetInterfaceFilter(func(name string) bool {
		ifc, err := net.InterfaceByName(name)
		return err == nil && ifc.Flags&net.FlagLoopback != 0
	})
	se.SetIPFilter(func(ip net.IP) bool { return ip.Equal(net.IPv4(127, 0, 0, 1)) })
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	return webrtc.NewAPI(webrtc.WithSettingEngine(se))
}

// rtcPeer is one side of the call: a member of the room with a receiver
// (Member.Receive over SSE or long-poll), a handler that owns the
// PeerConnection, and a sender that posts its signaling messages in order
// (Member.Send). Goroutines report failures on errs, never through t.
type rtcPeer struct {
	name      string
	transport tincan.Transport
	member    *tincan.Member // replaced by the resumed member between sessions
	id        string         // member's client id
	other     atomic.Value   // the other peer's client id (string); set once it joined
	api       *webrtc.API
	config    webrtc.Configuration // of every PeerConnection; none: host candidates only
	errs      chan error

	echoes   chan string         // what came back on the data channel this peer opened
	presence chan map[string]any // server events
	lastID   atomic.Uint64       // the last message id received
	offers   atomic.Int64        // offers made
	drops    atomic.Int64        // stale connections dropped on peer-joined
	ignored  atomic.Int64        // signaling messages of connections that are gone
	added    atomic.Int64        // remote candidates added

	// A session: start to stop.
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// Owned by the handler goroutine while a session runs.
	pc             *webrtc.PeerConnection
	sid, remoteSid string
	stale          map[string]bool // PeerConnections of the other side that are gone
	pending        []pendingCandidate
}

type pendingCandidate struct {
	sid  string
	init webrtc.ICECandidateInit
}

// localCandidate is a candidate gathered by pc (nil: gathering is complete).
type localCandidate struct {
	pc *webrtc.PeerConnection
	c  *webrtc.ICECandidate
}

// newMemberPeer is a peer of the member m, receiving over transport.
func newMemberPeer(name string, transport tincan.Transport, m *tincan.Member, errs chan error) *rtcPeer {
	return &rtcPeer{
		name: name, transport: transport, member: m, id: m.ClientID,
		api: rtcAPI(), errs: errs,
		echoes: make(chan string, 16), presence: make(chan map[string]any, 16), stale: map[string]bool{},
	}
}

func (p *rtcPeer) fail(format string, args ...any) {
	select {
	case p.errs <- fmt.Errorf(p.name+": "+format, args...):
	default:
	}
}

// start begins a session: receive everything after since, and offer when
// the join said so.
func (p *rtcPeer) start(since uint64, offer bool) {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.lastID.Store(since)
	events := make(chan any, 1024)
	out := make(chan map[string]any, 1024)
	p.wg.Add(3)
	go func() { defer p.wg.Done(); p.receive(ctx, since, events) }()
	go func() { defer p.wg.Done(); p.send(ctx, out) }()
	go func() { defer p.wg.Done(); p.handle(ctx, events, out, offer) }()
}

// stop ends the session and closes the PeerConnection. It is idempotent.
func (p *rtcPeer) stop() {
	if p.cancel == nil {
		return
	}
	p.cancel()
	p.wg.Wait()
	p.cancel = nil
	p.dropPC() // the handler is gone: the state is ours
}

func (p *rtcPeer) waitEcho(t *testing.T, want string, errs chan error) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case got := <-p.echoes:
			if got == "echo:"+want {
				return
			}
			t.Logf("%s: ignoring echo %q", p.name, got)
		case err := <-errs:
			t.Fatal(err)
		case <-timeout:
			t.Fatalf("%s: no echo of %q within 30s", p.name, want)
		}
	}
}

func (p *rtcPeer) waitPresence(t *testing.T, errs chan error) map[string]any {
	t.Helper()
	select {
	case ev := <-p.presence:
		return ev
	case err := <-errs:
		t.Fatal(err)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no server event within 30s", p.name)
	}
	return nil
}

// receive delivers the member's messages after since to the handler,
// with Member.Receive over the peer's transport, from since (the cursor
// the client resumes from: Last-Event-ID, or since=). The session is one
// connection: a message at or below the cursor, or a stream or poll loop
// that ends or starts again before the session does, fails the test.
func (p *rtcPeer) receive(ctx context.Context, since uint64, events chan<- any) {
	var connects atomic.Int64
	opts := &tincan.ReceiveOptions{Transport: p.transport, Since: since, Wait: 10 * time.Second,
		Hooks: tincan.Hooks{
			OnConnect: func(t tincan.Transport, cursor uint64) {
				if n := connects.Add(1); t != p.transport || n > 1 {
					p.fail("%v connection #%d at %d, want one %v connection", t, n, cursor, p.transport)
				}
			},
			OnDisconnect: func(t tincan.Transport, err error) {
				if err != nil && ctx.Err() == nil {
					p.fail("%v ended: %v", t, err)
				}
			},
			OnStale: func(id, cursor uint64) { p.fail("received id %d after %d", id, cursor) },
		}}
	for msg, err := range p.member.Receive(ctx, opts) {
		if err != nil {
			p.fail("receive: %v", err)
			return
		}
		var m map[string]any
		if err := msg.Decode(&m); err != nil {
			p.fail("message %s: %v", msg.Data, err)
			return
		}
		if id := idOf(m); id != msg.ID {
			p.fail("message %d carries id %d: %s", msg.ID, id, msg.Data)
			return
		}
		if last := p.lastID.Load(); msg.ID <= last {
			p.fail("received id %d after %d: %v", msg.ID, last, m)
			return
		}
		if m["from"] == p.id || (m["to"] != nil && m["to"] != p.id) {
			p.fail("received a message not meant for it: %v", m)
			return
		}
		p.lastID.Store(msg.ID)
		select {
		case events <- m:
		case <-ctx.Done():
			return
		}
	}
	if ctx.Err() == nil {
		p.fail("receive ended before the session")
	}
}

// send posts the signaling messages in the order they were made.
func (p *rtcPeer) send(ctx context.Context, out <-chan map[string]any) {
	for {
		var m map[string]any
		select {
		case m = <-out:
		case <-ctx.Done():
			return
		}
		if _, err := p.member.Send(ctx, m, nil); err != nil {
			if ctx.Err() == nil {
				p.fail("post %v: %v", m, err)
			}
			return
		}
	}
}

// handle owns the PeerConnection: it reacts to received messages and to
// local candidates, and makes the offer when asked to.
func (p *rtcPeer) handle(ctx context.Context, events chan any, out chan<- map[string]any, offer bool) {
	signal := func(m map[string]any) {
		m["to"], m["sid"] = p.other.Load(), p.sid
		if p.remoteSid != "" {
			m["tsid"] = p.remoteSid
		}
		select {
		case out <- m:
		case <-ctx.Done():
		}
	}
	if offer {
		if err := p.offer(ctx, events, signal); err != nil {
			p.fail("offer: %v", err)
			return
		}
	}
	for {
		var ev any
		select {
		case ev = <-events:
		case <-ctx.Done():
			return
		}
		var err error
		switch ev := ev.(type) {
		case localCandidate:
			if ev.pc != p.pc {
				continue // of a connection dropped since
			}
			if ev.c == nil {
				signal(map[string]any{"type": "candidate", "candidate": nil})
				continue
			}
			c := ev.c.ToJSON()
			signal(map[string]any{"type": "candidate", "candidate": c.Candidate, "sdpMid": *c.SDPMid, "sdpMLineIndex": *c.SDPMLineIndex})
		case map[string]any:
			err = p.onMessage(ctx, ev, events, signal)
		}
		if err != nil {
			p.fail("%v", err)
			return
		}
	}
}

func (p *rtcPeer) onMessage(ctx context.Context, m map[string]any, events chan any, signal func(map[string]any)) error {
	typ, _ := m["type"].(string)
	switch typ {
	case "peer-joined", "peer-left":
		if m["from"] != nil {
			return fmt.Errorf("server event with from: %v", m)
		}
		select {
		case p.presence <- m:
		default:
		}
		if typ == "peer-left" {
			return fmt.Errorf("unexpected %v", m)
		}
		if m["peer"] == p.other.Load() && m["resumed"] == true && p.pc != nil {
			p.drops.Add(1)
			p.dropPC()
		}
		return nil
	case "offer", "answer", "candidate":
	default:
		return fmt.Errorf("unexpected message %v", m)
	}
	if m["from"] != p.other.Load() {
		return fmt.Errorf("message from %v, not from the other peer: %v", m["from"], m)
	}
	sid, _ := m["sid"].(string)
	if tsid, ok := m["tsid"].(string); (ok && tsid != p.sid) || p.stale[sid] {
		p.ignored.Add(1)
		return nil // meant for, or sent by, a connection that is gone
	}
	switch typ {
	case "offer":
		if p.pc != nil && p.remoteSid != sid {
			p.dropPC() // the other side started afresh without us noticing
		}
		if p.pc != nil {
			return fmt.Errorf("renegotiation offer %v", m)
		}
		if err := p.newPC(ctx, events); err != nil {
			return err
		}
		p.pc.OnDataChannel(func(dc *webrtc.DataChannel) {
			dc.OnMessage(func(msg webrtc.DataChannelMessage) { _ = dc.SendText("echo:" + string(msg.Data)) })
		})
		p.remoteSid = sid
		sdp, _ := m["sdp"].(string)
		if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sdp}); err != nil {
			return fmt.Errorf("set offer: %w", err)
		}
		answer, err := p.pc.CreateAnswer(nil)
		if err != nil {
			return fmt.Errorf("create answer: %w", err)
		}
		if err := p.pc.SetLocalDescription(answer); err != nil {
			return fmt.Errorf("set answer: %w", err)
		}
		signal(map[string]any{"type": "answer", "sdp": answer.SDP})
		return p.addPending()
	case "answer":
		if p.pc == nil || p.pc.SignalingState() != webrtc.SignalingStateHaveLocalOffer {
			p.ignored.Add(1)
			return nil // for an offer of a connection that is gone
		}
		p.remoteSid = sid
		sdp, _ := m["sdp"].(string)
		if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}); err != nil {
			return fmt.Errorf("set answer: %w", err)
		}
		return p.addPending()
	default: // candidate
		cand, _ := m["candidate"].(string)
		if cand == "" {
			return nil // end of candidates
		}
		init := webrtc.ICECandidateInit{Candidate: cand}
		if mid, ok := m["sdpMid"].(string); ok {
			init.SDPMid = &mid
		}
		if n, err := strconv.ParseUint(fmt.Sprint(m["sdpMLineIndex"]), 10, 16); err == nil {
			i := uint16(n)
			init.SDPMLineIndex = &i
		}
		if p.pc != nil && p.remoteSid == sid && p.pc.RemoteDescription() != nil {
			if err := p.pc.AddICECandidate(init); err != nil {
				return fmt.Errorf("add candidate %q: %w", cand, err)
			}
			p.added.Add(1)
			return nil
		}
		// It may come before the description it belongs to.
		p.pending = append(p.pending, pendingCandidate{sid, init})
		return nil
	}
}

func (p *rtcPeer) addPending() error {
	for _, c := range p.pending {
		if c.sid != p.remoteSid {
			continue
		}
		if err := p.pc.AddICECandidate(c.init); err != nil {
			return fmt.Errorf("add candidate %q: %w", c.init.Candidate, err)
		}
		p.added.Add(1)
	}
	p.pending = nil
	return nil
}

// offer makes a new connection with a data channel that pings when it opens,
// and sends the offer.
func (p *rtcPeer) offer(ctx context.Context, events chan any, signal func(map[string]any)) error {
	if err := p.newPC(ctx, events); err != nil {
		return err
	}
	ping := fmt.Sprintf("ping %s #%d", p.name, p.offers.Add(1))
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
	if err := p.pc.SetLocalDescription(offer); err != nil {
		return err
	}
	signal(map[string]any{"type": "offer", "sdp": offer.SDP})
	return nil
}

func (p *rtcPeer) newPC(ctx context.Context, events chan<- any) error {
	pc, err := p.api.NewPeerConnection(p.config)
	if err != nil {
		return err
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	p.pc, p.sid, p.remoteSid, p.pending = pc, p.name+"-"+hex.EncodeToString(b), "", nil
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		select {
		case events <- localCandidate{pc, c}:
		case <-ctx.Done():
		}
	})
	return nil
}

// dropPC closes the connection; whatever its peer connection sends later is stale.
func (p *rtcPeer) dropPC() {
	if p.pc == nil {
		return
	}
	if err := p.pc.Close(); err != nil && !errors.Is(err, webrtc.ErrConnectionClosed) {
		p.fail("close: %v", err)
	}
	if p.remoteSid != "" {
		p.stale[p.remoteSid] = true
	}
	p.pc, p.remoteSid, p.pending = nil, "", nil
}
