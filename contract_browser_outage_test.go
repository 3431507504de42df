//go:build browser

// Browser test of a signaling outage in the middle of a call
// (contract_browser_test.go has the browser, the pages and how to run them).
package main

import (
	"net"
	"net/http/httptest"
	"testing"
	"time"
)

// The server stops in the middle of a call and starts again on the same
// file and the same port, reached directly or through a reverse proxy
// (which answers 502 while it is down). Both pages say that the server
// cannot be reached while the call goes on (media keeps arriving), then
// that it is back; it is still the same call (no new peer connection, the
// same members), signaling works again (an ICE restart goes through), a
// page on the event stream is back on it rather than on long-poll, and one
// on long-poll waits as long as before.
func TestBrowserCallServerOutage(t *testing.T) {
	for _, c := range []struct {
		name      string
		transport string
		proxied   bool
	}{
		{"sse", "sse", false},
		{"poll", "poll", false},
		{"sse behind a proxy", "sse", true},
		{"poll behind a proxy", "poll", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			transport := c.transport
			query := ""
			if transport == "poll" {
				query = "?transport=poll"
			}
			srv := newTestServer(t, withFlags("-addr", freeAddr(t)))
			base := srv.URL()
			pageBase := base
			if c.proxied {
				proxy := httptest.NewServer(streamingProxy(base))
				t.Cleanup(proxy.Close)
				pageBase = proxy.URL
			}
			b := newBrowser(t)
			room := randomRoom(t)
			alice, bob := startCall(t, b, pageBase, room, query)
			pages := []*page{alice, bob}
			ids := map[*page]string{}
			generations := map[*page]int{}

			phase(t, "the call connects", func(t *testing.T) {
				waitConnected(t, 30*time.Second, alice, bob)
				for _, p := range pages {
					p.waitVideo(t, 20*time.Second)
					p.waitFor(t, "signaling up", `document.documentElement.dataset.signaling === 'up'`, 5*time.Second)
					ids[p] = p.clientID()
					generations[p] = p.int(t, `window.tincanDebug.generations`)
				}
			})
			phase(t, "the server stops: both pages say so, and the media keeps arriving", func(t *testing.T) {
				srv.stop()
				for _, p := range pages {
					p.waitFor(t, "the notice that the server cannot be reached", `document.documentElement.dataset.signaling === 'down' &&
					!document.getElementById('signal-notice').hidden &&
					(window.tincanDebug.signalNotices.at(-1) || '').includes('cannot be reached')`, 30*time.Second)
				}
				for _, p := range pages {
					p.waitMediaArrives(t)
					if s := p.state(); s != "connected" {
						t.Errorf("%s: state %q while the server is down, want connected", p.name, s)
					}
				}
				t.Logf("alice says: %s", alice.str(`document.getElementById('signal-notice').textContent`))
				screenshots(t, alice)
			})
			phase(t, "the server starts again on the same file and port: both pages say it is back, in the same call", func(t *testing.T) {
				srv.start(t)
				if srv.URL() != base {
					t.Fatalf("the server came back at %s, not %s", srv.URL(), base)
				}
				for _, p := range pages {
					// (The notice goes after a while: the page's record of it stays.)
					p.waitFor(t, "the notice that the server is back", `document.documentElement.dataset.signaling === 'up' &&
					(window.tincanDebug.signalNotices.at(-1) || '').includes('is back')`, 40*time.Second)
				}
				for _, p := range pages {
					if s := p.state(); s != "connected" {
						t.Errorf("%s: state %q after the outage, want connected", p.name, s)
					}
					if id := p.clientID(); id != ids[p] {
						t.Errorf("%s: member %q after the outage, want %q", p.name, id, ids[p])
					}
					if g := p.int(t, `window.tincanDebug.generations`); g != generations[p] {
						t.Errorf("%s: %d peer connections made after the outage, want still %d", p.name, g, generations[p])
					}
					p.waitMediaArrives(t)
				}
				if n := srv.roomInfo(t, room).Occupants; n != 2 {
					t.Errorf("occupants after the outage = %d, want 2", n)
				}
				screenshots(t, alice)
			})
			phase(t, "signaling works again: an ICE restart goes through", func(t *testing.T) {
				const ufrag = `(() => { const p = [...window.tincanDebug.peers.values()][0];
					const m = p && p.pc.localDescription && /a=ice-ufrag:(\S+)/.exec(p.pc.localDescription.sdp);
					return m ? m[1] : ''; })()`
				before := bob.str(ufrag)
				if _, err := eval[bool](alice, `(window.tincanDebug.restartIce(), true)`, 5*time.Second); err != nil {
					t.Fatal(err)
				}
				bob.waitFor(t, "new ICE credentials", ufrag+` !== `+jsString(before)+` && `+ufrag+` !== ''`, 30*time.Second)
				waitConnected(t, 30*time.Second, alice, bob)
				for _, p := range pages {
					if tr := p.transport(); tr != transport {
						t.Errorf("%s: transport %q after the outage, want %q", p.name, tr, transport)
					}
					if wait := p.str(`window.tincanDebug.client.pollWait`); wait != "25" {
						t.Errorf("%s: the long-poll waits %s s after the outage, want 25 as before", p.name, wait)
					}
				}
			})
		})
	}
}

// freeAddr is a 127.0.0.1 address with a port that is free now, for a
// server that must come back on the same port.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (p *page) int(t *testing.T, expr string) int {
	t.Helper()
	n, err := eval[int](p, expr, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: %s: %v", p.name, expr, err)
	}
	return n
}

// receivedBytes is what the page's peer connections have received of
// media so far.
const receivedBytes = `(async () => { let n = 0;
	for (const p of window.tincanDebug.peers.values()) {
		(await p.pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp') n += r.bytesReceived; });
	}
	return n; })()`

// waitMediaArrives waits until the page has received 20 kB more media.
func (p *page) waitMediaArrives(t *testing.T) {
	t.Helper()
	before := p.int(t, receivedBytes)
	deadline := time.Now().Add(20 * time.Second)
	for {
		now := p.int(t, receivedBytes)
		if now > before+20000 {
			p.b.logf("%s received %d bytes of media more", p.name, now-before)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d bytes of media in 20 s (state %q)%s", p.name, now-before, p.state(), p.b.summary())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
