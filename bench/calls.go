package bench

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tincan/tincan/client"
)

// calls: -rooms workers each set up calls one after the other, each in a room
// of its own, the way two browsers do:
//
//	A joins and listens; B joins (initiator) and listens;
//	B posts the offer, then its candidates in one batch POST (-batch; or
//	one POST each, -candidate-window at a time); A, once the offer arrived, posts
//	the answer, then its candidates; the call is set up when A holds the
//	offer and every candidate of B and B holds the answer and every
//	candidate of A (the setup time runs from A's join to that moment);
//	B posts bye and leaves; A, once bye arrived, leaves (the room is deleted).
func (b *bench) calls(ctx context.Context, res *Result) error {
	cfg := b.cfg
	offer, answer := sdpTemplate("offer", cfg.sdpSize), sdpTemplate("answer", cfg.sdpSize)
	stop, cancelStop := context.WithTimeout(ctx, cfg.duration)
	defer cancelStop()
	b.measure(ctx, res, nil, func() {
		var wg sync.WaitGroup
		for w := range cfg.rooms {
			wg.Add(1)
			go func() {
				defer wg.Done()
				failures := 0
				for n := 0; stop.Err() == nil && failures < 10 && b.take(); n++ {
					if b.call(ctx, b.room("c", w, n), offer, answer) {
						failures = 0
					} else {
						failures++
						sleep(stop, 10*time.Millisecond)
					}
				}
				if failures >= 10 {
					b.c.fail("call worker stopped after 10 failed calls")
				}
			}()
		}
		wg.Wait()
	})
	return ctx.Err()
}

// call runs one call; it reports whether the call was set up and ended
// cleanly.
func (b *bench) call(ctx context.Context, name string, offer, answer [2]string) bool {
	cfg := b.cfg
	t0 := time.Now()
	l := newLedger()
	life, end := context.WithCancel(ctx)
	defer end()

	var aGot, bGot atomic.Int64
	want := int64(1 + cfg.candidates)
	setUp := make(chan struct{})
	var setUpOnce sync.Once
	check := func() {
		if aGot.Load() >= want && bGot.Load() >= want {
			setUpOnce.Do(func() { close(setUp) })
		}
	}
	gotOffer := make(chan struct{}, 1)
	gotBye := make(chan struct{}, 1)
	onA := func(m message) {
		typ, ok := b.arrived(l, m)
		if !ok {
			return
		}
		switch typ {
		case "offer":
			gotOffer <- struct{}{}
			aGot.Add(1)
		case "candidate":
			aGot.Add(1)
		case "bye":
			gotBye <- struct{}{}
		}
		check()
	}
	onB := func(m message) {
		if typ, ok := b.arrived(l, m); ok && (typ == "answer" || typ == "candidate") {
			bGot.Add(1)
			check()
		}
	}

	octx, cancel := b.opCtx(ctx)
	a, err := b.cl.Join(octx, name, client.JoinOptions{})
	cancel()
	if err != nil {
		b.c.fail(kind("join", err))
		return false
	}
	ra := b.receive(life, a, cfg.transport, onA)
	octx, cancel = b.opCtx(ctx)
	bp, err := b.cl.Join(octx, name, client.JoinOptions{})
	cancel()
	if err != nil {
		b.c.fail(kind("join", err))
		b.endCall(ctx, l, nil, ra, a, nil)
		return false
	}
	rb := b.receive(life, bp, cfg.transport, onB)

	// A answers once the offer is there, then trickles its candidates.
	var answered sync.WaitGroup
	answered.Add(1)
	go func() {
		defer answered.Done()
		t := time.NewTimer(cfg.timeout)
		defer t.Stop()
		select {
		case <-gotOffer:
		case <-t.C:
			return
		case <-life.Done():
			return
		}
		if !b.sendTo(life, a, bp.ClientID, l, func(seq uint64) []byte { return sdpBody(answer, seq) }) {
			return
		}
		b.sendCandidates(life, a, bp.ClientID, l)
	}()
	ok := b.sendTo(life, bp, a.ClientID, l, func(seq uint64) []byte { return sdpBody(offer, seq) }) &&
		b.sendCandidates(life, bp, a.ClientID, l)
	if ok {
		t := time.NewTimer(cfg.timeout)
		select {
		case <-setUp:
			b.setup.add(time.Since(t0))
			b.c.calls.Add(1)
		case <-t.C:
			ok = false
		case <-ctx.Done():
			ok = false
		}
		t.Stop()
	}
	answered.Wait()
	if !ok {
		b.endCall(ctx, l, rb, ra, a, bp)
		return false
	}

	// Hang up: B says bye and leaves; A leaves once the bye is there.
	ok = b.sendTo(life, bp, a.ClientID, l, func(seq uint64) []byte { return byeBody(seq) })
	rb.closing.Store(true)
	b.leave(ctx, bp)
	rb.finish(time.Second)
	if ok {
		t := time.NewTimer(cfg.timeout)
		select {
		case <-gotBye:
		case <-t.C:
			ok = false
		case <-ctx.Done():
			ok = false
		}
		t.Stop()
	}
	b.endCall(ctx, l, nil, ra, a, nil)
	if ok {
		b.c.callsDone.Add(1)
	}
	return ok
}

// endCall makes whoever is still there leave and stops the receivers.
func (b *bench) endCall(ctx context.Context, l *ledger, rb, ra *receiver, a, bp *client.Member) {
	for _, x := range []struct {
		p *client.Member
		r *receiver
	}{{bp, rb}, {a, ra}} {
		if x.r != nil {
			x.r.closing.Store(true)
		}
		if x.p != nil {
			b.leave(ctx, x.p)
		}
		if x.r != nil {
			x.r.finish(time.Second)
		}
	}
	b.c.lost.Add(int64(l.expire()))
}

// sdpTemplate is an offer or answer body split around its seq, with an SDP
// of about size bytes (JSON-escaped CRLFs included).
func sdpTemplate(typ string, size int) [2]string {
	var sdp strings.Builder
	sdp.WriteString(`v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n` +
		`a=msid-semantic: WMS stream\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\n`)
	for i := 0; sdp.Len() < size-40; i++ {
		sdp.WriteString(`a=rtpmap:` + strconv.Itoa(96+i%32) + ` VP8/90000\r\na=rtcp-fb:` + strconv.Itoa(96+i%32) + ` nack pli\r\n`)
	}
	return [2]string{`{"type":"` + typ + `","seq":`, `,"sdp":"` + sdp.String() + `"}`}
}

func sdpBody(t [2]string, seq uint64) []byte {
	b := make([]byte, 0, len(t[0])+len(t[1])+20)
	b = append(b, t[0]...)
	b = strconv.AppendUint(b, seq, 10)
	return append(b, t[1]...)
}

// sendCandidates posts the -candidates of p to peer to: with -batch in
// one batch POST (64 at most each), else one POST each, -candidate-window
// at a time, as a browser has a few connections per host for them. It
// reports whether all went.
func (b *bench) sendCandidates(ctx context.Context, p *client.Member, to string, l *ledger) bool {
	if b.cfg.batch {
		// A burst gathered together goes in one POST, as tincan.js sends it.
		for sent := 0; sent < b.cfg.candidates; sent += 64 {
			n := min(64, b.cfg.candidates-sent)
			if !b.sendBatchTo(ctx, p, to, l, n, func(seq uint64, i int) []byte { return candidateBody(seq, sent+i) }) {
				return false
			}
		}
		return true
	}
	var failed atomic.Bool
	var wg sync.WaitGroup
	window := make(chan struct{}, b.cfg.candidateWindow)
	for i := range b.cfg.candidates {
		window <- struct{}{}
		if failed.Load() {
			<-window
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-window }()
			if !b.sendTo(ctx, p, to, l, func(seq uint64) []byte { return candidateBody(seq, i) }) {
				failed.Store(true)
			}
		}()
	}
	wg.Wait()
	return !failed.Load()
}

func candidateBody(seq uint64, i int) []byte {
	b := make([]byte, 0, 256)
	b = append(b, `{"type":"candidate","seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"candidate":"candidate:842163049 1 udp 1677729535 203.0.113.7 `...)
	b = strconv.AppendInt(b, int64(40000+i), 10)
	b = append(b, ` typ srflx raddr 10.0.0.1 rport 46154 generation 0 ufrag EsAw network-cost 999","sdpMid":"0","sdpMLineIndex":0}`...)
	return b
}

func byeBody(seq uint64) []byte {
	return append(strconv.AppendUint([]byte(`{"type":"bye","seq":`), seq, 10), '}')
}
