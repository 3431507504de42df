// Command pion-call places a WebRTC call between two pion/webrtc peers, alice
// and bob, that signal through a tincan server with the Go client package
// github.com/tincan/tincan/client: they join one room, exchange the offer, the
// answer and trickled ICE candidates as tincan messages, connect, and send each
// other a message over a data channel.
//
// Run a server in the repository's root, and the example in a second terminal:
//
//	go run .
//	go run ./examples/pion-call [-server http://localhost:8080] [-room name] [-timeout 30s]
//
// It prints what happens and exits 0 once both peers are connected and each
// got the other's message; 1 with the reason on failure or timeout; 2 for bad
// flags.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
	"github.com/tincan/tincan/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run parses the flags, places the call and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pion-call", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", "http://localhost:8080", "the tincan server's URL")
	room := fs.String("room", "", "the room to call in (default: a random name)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *room == "" {
		*room = "pion-call-" + strings.ToLower(rand.Text()[:10])
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := call(ctx, *server, *room, log.New(stdout, "", log.Ltime|log.Lmicroseconds)); err != nil {
		fmt.Fprintf(stderr, "pion-call: FAILED: %v\n", err)
		return 1
	}
	return 0
}

// call joins alice, then bob, to room; bob, who finds alice there, is the
// initiator and calls her. It returns once the call is up and a message went
// each way, after hanging up.
func call(ctx context.Context, server, room string, out *log.Logger) error {
	c, err := client.New(server)
	if err != nil {
		return err
	}
	out.Printf("room %q on %s", room, server)
	var wg sync.WaitGroup
	defer wg.Wait()             // the receive loops, which end in hangUp
	errs := make(chan error, 1) // the first thing that went wrong in the peers' goroutines
	alice, err := join(ctx, c, room, "alice", out, errs)
	if err != nil {
		return err
	}
	defer alice.hangUp()
	bob, err := join(ctx, c, room, "bob", out, errs)
	if err != nil {
		return err
	}
	defer bob.hangUp()

	for _, p := range []*peer{alice, bob} {
		wg.Go(p.receive)
	}
	// Perfect negotiation as tincan assigns the roles: the member that found
	// others in the room (initiator) offers, and is the polite peer. Only one
	// side offers here, so no offers collide and there is nothing to roll back.
	for _, p := range []*peer{alice, bob} {
		if p.m.Initiator {
			if err := p.offer(p.m.Peers[0]); err != nil {
				return err
			}
		}
	}
	for _, step := range []struct {
		what string
		done <-chan struct{}
	}{
		{"alice to connect", alice.connected}, {"bob to connect", bob.connected},
		{"alice to receive bob's message", alice.received}, {"bob to receive alice's message", bob.received},
	} {
		select {
		case <-step.done:
		case err := <-errs:
			return err
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("timed out waiting for %s", step.what)
			}
			return fmt.Errorf("interrupted while waiting for %s", step.what)
		}
	}
	out.Printf("ok: both peers connected and the data channel carried a message each way; hanging up")
	return nil
}

// peer is one side of the call: a member of the room and its PeerConnection.
type peer struct {
	name      string
	m         *client.Member
	pc        *webrtc.PeerConnection
	ctx       context.Context // the peer's part of the call, ended by hangUp
	stop      context.CancelFunc
	out       *log.Logger
	errs      chan<- error
	connected chan struct{}             // closed once the PeerConnection is connected
	received  chan struct{}             // closed once a data channel message arrived
	remote    atomic.Value              // the other member's client_id (a string), once known
	pending   []webrtc.ICECandidateInit // candidates that came before the remote description
}

// join takes a seat in room and makes the member's PeerConnection, with the
// join answer's ICE servers (tincan's STUN/TURN).
func join(ctx context.Context, c *client.Client, room, name string, out *log.Logger, errs chan<- error) (*peer, error) {
	m, err := c.Join(ctx, room, client.JoinOptions{})
	if err != nil {
		return nil, fmt.Errorf("%s: join: %w", name, err)
	}
	out.Printf("%s: joined as %s (initiator=%v, peers %v)", name, m.ClientID, m.Initiator, m.Peers)
	var servers []webrtc.ICEServer
	for _, s := range m.ICEServers {
		servers = append(servers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	// Both peers live in this process, so a loopback candidate pair is all
	// they need: include loopback (pion leaves it out by default), gather on
	// 127.0.0.1 only and without mDNS, so that the call works offline and
	// nothing leaves the machine. Peers on two machines drop these settings.
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() && ip.To4() != nil })
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	pc, err := webrtc.NewAPI(webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{ICEServers: servers})
	if err != nil {
		m.Leave(context.WithoutCancel(ctx))
		return nil, err
	}
	p := &peer{name: name, m: m, pc: pc, out: out, errs: errs, connected: make(chan struct{}), received: make(chan struct{})}
	p.ctx, p.stop = context.WithCancel(ctx)
	markConnected := sync.OnceFunc(func() { close(p.connected) })
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		out.Printf("%s: connection %s", name, s)
		switch s {
		case webrtc.PeerConnectionStateConnected:
			markConnected()
		case webrtc.PeerConnectionStateFailed:
			p.fail(errors.New("the connection failed"))
		}
	})
	pc.OnICECandidate(p.sendCandidate)
	pc.OnDataChannel(p.useChannel) // the answerer's end of the offerer's channel
	return p, nil
}

// offer opens the data channel and sends the offer to the member to.
func (p *peer) offer(to string) error {
	p.remote.Store(to)
	dc, err := p.pc.CreateDataChannel("chat", nil)
	if err != nil {
		return err
	}
	p.useChannel(dc)
	offer, err := p.pc.CreateOffer(nil)
	if err == nil {
		err = p.pc.SetLocalDescription(offer) // starts gathering: sendCandidate
	}
	if err == nil {
		p.out.Printf("%s: sending offer to %s", p.name, to)
		_, err = p.m.Send(p.ctx, map[string]any{"type": "offer", "sdp": offer.SDP, "to": to}, nil)
	}
	if err != nil {
		return fmt.Errorf("%s: offer: %w", p.name, err)
	}
	return nil
}

// receive handles the member's messages (over SSE, each once, in order) until
// the peer hangs up.
func (p *peer) receive() {
	for msg, err := range p.m.Receive(p.ctx, nil) {
		if err != nil {
			p.fail(fmt.Errorf("receive: %w", err))
			return
		}
		if err := p.handle(msg); err != nil {
			p.fail(fmt.Errorf("%s from %s: %w", msg.Type(), msg.From(), err))
			return
		}
	}
}

// handle applies one message: an offer, an answer, a candidate, or a server
// event such as peer-joined.
func (p *peer) handle(msg client.Message) error {
	var s struct {
		SDP           string  `json:"sdp"`
		Candidate     *string `json:"candidate"` // null: end-of-candidates
		SDPMid        *string `json:"sdpMid"`
		SDPMLineIndex *uint16 `json:"sdpMLineIndex"`
		Peer          string  `json:"peer"`
	}
	if err := msg.Decode(&s); err != nil {
		return err
	}
	switch msg.Type() {
	case "peer-joined", "peer-left":
		p.out.Printf("%s: %s %s", p.name, msg.Type(), s.Peer)
	case "offer":
		p.out.Printf("%s: got offer from %s", p.name, msg.From())
		p.remote.Store(msg.From())
		if err := p.setRemoteDescription(webrtc.SDPTypeOffer, s.SDP); err != nil {
			return err
		}
		answer, err := p.pc.CreateAnswer(nil)
		if err == nil {
			err = p.pc.SetLocalDescription(answer)
		}
		if err == nil {
			p.out.Printf("%s: sending answer to %s", p.name, msg.From())
			_, err = p.m.Send(p.ctx, map[string]any{"type": "answer", "sdp": answer.SDP, "to": msg.From()}, nil)
		}
		return err
	case "answer":
		p.out.Printf("%s: got answer from %s", p.name, msg.From())
		return p.setRemoteDescription(webrtc.SDPTypeAnswer, s.SDP)
	case "candidate":
		c := webrtc.ICECandidateInit{SDPMid: s.SDPMid, SDPMLineIndex: s.SDPMLineIndex}
		if s.Candidate != nil {
			c.Candidate = *s.Candidate // pion takes "" as end-of-candidates
		}
		if p.pc.RemoteDescription() == nil { // it overtook the offer or answer
			p.pending = append(p.pending, c)
			return nil
		}
		return p.pc.AddICECandidate(c)
	}
	return nil
}

// setRemoteDescription applies the remote sdp, then the candidates that came
// before it.
func (p *peer) setRemoteDescription(typ webrtc.SDPType, sdp string) error {
	if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: typ, SDP: sdp}); err != nil {
		return err
	}
	for _, c := range p.pending {
		if err := p.pc.AddICECandidate(c); err != nil {
			return err
		}
	}
	p.pending = nil
	return nil
}

// sendCandidate trickles a local candidate to the other peer; nil (gathering
// is done) becomes the end-of-candidates message, "candidate": null.
func (p *peer) sendCandidate(c *webrtc.ICECandidate) {
	msg := map[string]any{"type": "candidate", "candidate": nil, "to": p.remote.Load()}
	if c != nil {
		init := c.ToJSON()
		msg["candidate"], msg["sdpMid"], msg["sdpMLineIndex"] = init.Candidate, init.SDPMid, init.SDPMLineIndex
		p.out.Printf("%s: sending candidate %s", p.name, c)
	} else {
		p.out.Printf("%s: sending end-of-candidates", p.name)
	}
	if _, err := p.m.Send(p.ctx, msg, nil); err != nil {
		p.fail(fmt.Errorf("sending a candidate: %w", err))
	}
}

// useChannel says hello on dc once it is open and notes what comes back.
func (p *peer) useChannel(dc *webrtc.DataChannel) {
	dc.OnOpen(func() {
		text := "hello from " + p.name
		p.out.Printf("%s: data channel %q open, sending %q", p.name, dc.Label(), text)
		if err := dc.SendText(text); err != nil {
			p.fail(fmt.Errorf("data channel: %w", err))
		}
	})
	markReceived := sync.OnceFunc(func() { close(p.received) })
	dc.OnMessage(func(m webrtc.DataChannelMessage) {
		p.out.Printf("%s: received %q", p.name, m.Data)
		markReceived()
	})
}

// fail reports err to call, unless the call is over or failed already.
func (p *peer) fail(err error) {
	if p.ctx.Err() == nil {
		select {
		case p.errs <- fmt.Errorf("%s: %w", p.name, err):
		default:
		}
	}
}

// hangUp leaves the room and closes the PeerConnection. (Close waits for ICE
// gathering, seconds when the server hands out a STUN/TURN address where
// nothing answers.)
func (p *peer) hangUp() {
	p.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.m.Leave(ctx); err != nil {
		p.out.Printf("%s: leave: %v", p.name, err)
	}
	p.pc.Close()
	p.out.Printf("%s: hung up", p.name)
}
