//go:build browser

// Browser tests: the call page and tincan.js driven in Debian's Chromium
// through chromedp. Run them with
//
//	go test -tags browser -run Browser -v .
//
// They need /usr/bin/chromium (apt-get install -y chromium); without it they
// fail, they do not skip. Screenshots go to $TINCAN_SCREENSHOTS, or to a
// temporary directory; their paths are logged.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

const chromiumPath = "/usr/bin/chromium"

// ---- browser and pages ----

type browser struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	logs     []string
	problems []string // CSP violations and uncaught exceptions: the test fails
	done     bool
	pages    []*page
}

// newBrowser starts a headless Chromium with fake camera and microphone and a
// fresh profile. It closes when the test ends; the console output of its pages
// is logged when the test fails.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("the browser tests need Chromium at %s (apt-get install -y chromium): %v", chromiumPath, err)
	}
	b := &browser{t: t}
	t.Cleanup(func() {
		b.mu.Lock()
		b.done = true
		logs, problems := b.logs, b.problems
		b.mu.Unlock()
		for _, p := range problems {
			t.Errorf("page problem: %s", p)
		}
		if t.Failed() || os.Getenv("TINCAN_BROWSER_LOG") != "" {
			t.Logf("browser console (%d lines):\n%s", len(logs), strings.Join(logs, "\n"))
		}
	})
	profile := t.TempDir()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		// Two tabs of one browser take part in one call: neither may be
		// throttled as a background tab.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("mute-audio", true),
		chromedp.WindowSize(1100, 800),
		chromedp.UserDataDir(profile),
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(acancel)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // starts the browser, no timeout
		t.Fatalf("starting Chromium: %v", err)
	}
	b.ctx = ctx
	return b
}

func (b *browser) logf(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.done {
		b.logs = append(b.logs, time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
	}
}

// summary tells the state of every page, for failure messages.
func (b *browser) summary() string {
	b.mu.Lock()
	pages := b.pages
	b.mu.Unlock()
	var out []string
	for _, p := range pages {
		out = append(out, fmt.Sprintf("%s: %s/%s", p.name, p.state(), p.transport()))
	}
	return "; pages " + strings.Join(out, ", ")
}

type page struct {
	b    *browser
	name string
	ctx  context.Context
}

// open makes a new tab (its own sessionStorage), runs the setup actions (such
// as an emulated viewport) and loads url in it, failing t if it cannot. The
// tab lasts as long as the browser.
func (b *browser) open(t testing.TB, name, url string, setup ...chromedp.Action[chromedp.Void]) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.t.Cleanup(cancel)
	p := &page{b: b, name: name, ctx: ctx}
	b.mu.Lock()
	b.pages = append(b.pages, p)
	b.mu.Unlock()
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("%s: opening a tab: %v", name, err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			b.logf("%s %s", name, m.String())
			if m.IsException() || strings.Contains(m.Text, "Content Security Policy") {
				b.mu.Lock()
				b.problems = append(b.problems, name+": "+m.String())
				b.mu.Unlock()
			}
		}
	}()
	if err := chromedp.Do(ctx, setup...); err != nil {
		t.Fatalf("%s: setting up the tab: %v", name, err)
	}
	p.navigate(t, url)
	return p
}

func (p *page) navigate(t testing.TB, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("%s: navigating to %s: %v", p.name, url, err)
	}
	p.b.logf("%s loaded %s", p.name, url)
}

func (p *page) reload(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Reload()); err != nil {
		t.Fatalf("%s: reloading: %v", p.name, err)
	}
	p.b.logf("%s reloaded", p.name)
}

// eval evaluates a JavaScript expression (awaiting a promise) and decodes its value.
func eval[T any](p *page, expr string, timeout time.Duration) (T, error) {
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

func (p *page) str(expr string) string {
	v, err := eval[string](p, `String(`+expr+` ?? "")`, 10*time.Second)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return v
}

func (p *page) state() string     { return p.str(`document.documentElement.dataset.state`) }
func (p *page) transport() string { return p.str(`document.documentElement.dataset.transport`) }
func (p *page) clientID() string  { return p.str(`document.documentElement.dataset.clientId`) }

// waitFor polls the expression until it is true, failing t after timeout.
func (p *page) waitFor(t testing.TB, what, expr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := eval[bool](p, `!!(`+expr+`)`, 5*time.Second)
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s after %v (state %q, transport %q, last error %v)%s", p.name, what, timeout, p.state(), p.transport(), err, p.b.summary())
		}
		time.Sleep(150 * time.Millisecond)
	}
}

func (p *page) waitState(t testing.TB, want string, timeout time.Duration) {
	t.Helper()
	p.waitFor(t, "state "+want, `document.documentElement.dataset.state === `+jsString(want), timeout)
	p.b.logf("%s state %s", p.name, want)
}

func waitConnected(t *testing.T, timeout time.Duration, pages ...*page) {
	t.Helper()
	for _, p := range pages {
		p.waitState(t, "connected", timeout)
	}
	t.Logf("connected: %s", pageNames(pages))
}

// waitVideo waits until the page plays the other side's camera.
func (p *page) waitVideo(t testing.TB, timeout time.Duration) {
	t.Helper()
	p.waitFor(t, "remote video", `(() => { const v = document.querySelector('#remotes video');
		return v && v.videoWidth > 0 && v.readyState >= 2 && !v.closest('.tile').classList.contains('novideo'); })()`, timeout)
}

func pageNames(pages []*page) string {
	var names []string
	for _, p := range pages {
		names = append(names, p.name)
	}
	return strings.Join(names, ", ")
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// screenshots writes a PNG of each page to $TINCAN_SCREENSHOTS or a temporary
// directory, and logs the paths.
func screenshots(t *testing.T, pages ...*page) {
	t.Helper()
	dir := os.Getenv("TINCAN_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	safe := regexp.MustCompile(`[^A-Za-z0-9_.-]+`).ReplaceAllString(t.Name(), "_")
	for _, p := range pages {
		ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		cancel()
		if err != nil {
			t.Errorf("%s: screenshot: %v", p.name, err)
			continue
		}
		path := filepath.Join(dir, safe+"-"+p.name+".png")
		for i := 2; fileExists(path); i++ {
			path = filepath.Join(dir, fmt.Sprintf("%s-%s-%d.png", safe, p.name, i))
		}
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot of %s: %s", p.name, path)
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func randomRoom(t *testing.T) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "bt-" + hex.EncodeToString(b[:])
}

// ---- the call page ----

// startCall opens two pages on one room, the second after the first waits.
func startCall(t *testing.T, b *browser, base, room, query string) (alice, bob *page) {
	t.Helper()
	alice = b.open(t, "alice", base+"/r/"+room+query)
	alice.waitState(t, "waiting", 20*time.Second)
	bob = b.open(t, "bob", base+"/r/"+room+query)
	return alice, bob
}

func TestBrowserCallSSE(t *testing.T) {
	srv := newTestServer(t)
	base := srv.URL()
	b := newBrowser(t)
	room := randomRoom(t)
	alice, bob := startCall(t, b, base, room, "")
	waitConnected(t, 30*time.Second, alice, bob)
	for _, p := range []*page{alice, bob} {
		if tr := p.transport(); tr != "sse" {
			t.Errorf("%s: transport %q, want sse", p.name, tr)
		}
		p.waitVideo(t, 20*time.Second)
	}
	if n := srv.roomInfo(t, room).Occupants; n != 2 {
		t.Errorf("occupants = %d, want 2", n)
	}
	screenshots(t, alice, bob)
}

func TestBrowserCallPoll(t *testing.T) {
	srv := newTestServer(t)
	base := srv.URL()
	b := newBrowser(t)
	alice, bob := startCall(t, b, base, randomRoom(t), "?transport=poll")
	waitConnected(t, 30*time.Second, alice, bob)
	for _, p := range []*page{alice, bob} {
		if tr := p.transport(); tr != "poll" {
			t.Errorf("%s: transport %q, want poll", p.name, tr)
		}
		p.waitVideo(t, 20*time.Second)
	}
	screenshots(t, alice, bob)
}

// ICE restarts on both sides at the same moment: both make an offer (glare),
// the polite side rolls back, and the call comes back with new ICE credentials.
// The mute and camera buttons turn the local tracks off.
func TestBrowserCallICERestartGlare(t *testing.T) {
	srv := newTestServer(t)
	base := srv.URL()
	b := newBrowser(t)
	alice, bob := startCall(t, b, base, randomRoom(t), "")
	const ufrag = `(() => { const p = [...window.tincanDebug.peers.values()][0];
		const m = p && p.pc.localDescription && /a=ice-ufrag:(\S+)/.exec(p.pc.localDescription.sdp);
		return m ? m[1] : ''; })()`

	phase(t, "the call connects", func(t *testing.T) {
		waitConnected(t, 30*time.Second, alice, bob)
	})
	phase(t, "ICE restarts on both sides at once: new credentials, a stable state, connected again", func(t *testing.T) {
		before := map[*page]string{alice: alice.str(ufrag), bob: bob.str(ufrag)}
		var wg sync.WaitGroup
		for _, p := range []*page{alice, bob} {
			wg.Go(func() {
				if _, err := eval[bool](p, `(window.tincanDebug.restartIce(), true)`, 5*time.Second); err != nil {
					t.Errorf("%s: restartIce: %v", p.name, err)
				}
			})
		}
		wg.Wait()
		for _, p := range []*page{alice, bob} {
			p.waitFor(t, "new ICE credentials", ufrag+` !== `+jsString(before[p])+` && `+ufrag+` !== ''`, 20*time.Second)
			p.waitFor(t, "a stable signaling state", `[...window.tincanDebug.peers.values()][0].pc.signalingState === 'stable'`, 20*time.Second)
		}
		waitConnected(t, 30*time.Second, alice, bob)
		t.Logf("ICE restarted: alice %s -> %s, bob %s -> %s; offer collisions seen: alice %s, bob %s",
			before[alice], alice.str(ufrag), before[bob], bob.str(ufrag),
			alice.str(`window.tincanDebug.collisions`), bob.str(`window.tincanDebug.collisions`))
	})
	phase(t, "the mute and camera buttons turn the local tracks off", func(t *testing.T) {
		for _, id := range []string{"toggle-mic", "toggle-cam"} {
			if _, err := eval[bool](alice, `(document.getElementById(`+jsString(id)+`).click(), true)`, 5*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		alice.waitFor(t, "muted tracks", `window.tincanDebug.localStream.getTracks().every((t) => !t.enabled) &&
		document.getElementById('toggle-mic').getAttribute('aria-pressed') === 'true'`, 5*time.Second)
	})
	screenshots(t, alice, bob)
}

// setOffline sets navigator.onLine in the tab and fires offline / online.
func setOffline(t *testing.T, p *page, offline bool) {
	t.Helper()
	err := chromedp.Do(p.ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, network.OverrideNetworkState,
			network.OverrideNetworkStateParams{Offline: offline, DownloadThroughput: -1, UploadThroughput: -1})
		return err
	}))
	if err != nil {
		t.Fatalf("%s: offline=%v: %v", p.name, offline, err)
	}
	p.b.logf("%s offline=%v", p.name, offline)
}

// A page offline for longer than the client timeout (a laptop asleep) is
// removed; when it is back its token answers 401 and it joins again as a new
// member, and the call reconnects. Bob reaches the server through a proxy
// that the test unplugs (Chrome's offline mode leaves open streams alone).
func TestBrowserCallOfflineTimeout(t *testing.T) {
	srv := newTestServer(t, withFlags("-client-timeout=2s"))
	base := srv.URL()
	cable := &plug{h: streamingProxy(base), cancels: map[*int]context.CancelFunc{}}
	proxy := httptest.NewServer(cable)
	t.Cleanup(proxy.Close)
	b := newBrowser(t)
	room := randomRoom(t)
	var alice, bob *page
	var old string // bob's client id before he went offline

	phase(t, "the call connects, bob's page through a proxy that can be unplugged", func(t *testing.T) {
		alice = b.open(t, "alice", base+"/r/"+room)
		alice.waitState(t, "waiting", 20*time.Second)
		bob = b.open(t, "bob", proxy.URL+"/r/"+room)
		waitConnected(t, 30*time.Second, alice, bob)
		old = bob.clientID()
	})
	phase(t, "bob offline for longer than the client timeout is removed", func(t *testing.T) {
		cable.set(true)
		setOffline(t, bob, true)
		alice.waitState(t, "waiting", 20*time.Second) // peer-left, reason timeout
	})
	phase(t, "back online, bob joins as a new member and the call reconnects", func(t *testing.T) {
		cable.set(false)
		setOffline(t, bob, false)
		waitConnected(t, 40*time.Second, alice, bob)
		if id := bob.clientID(); id == old || id == "" {
			t.Errorf("bob's client id after the timeout: %q (was %q), want a new member", id, old)
		}
		if n := srv.roomInfo(t, room).Occupants; n != 2 {
			t.Errorf("occupants = %d, want 2", n)
		}
	})
}

// plug is a proxy that can be unplugged: it then aborts every open request
// and drops new connections, as a lost network does.
type plug struct {
	h       http.Handler
	mu      sync.Mutex
	down    bool
	cancels map[*int]context.CancelFunc
}

func (p *plug) set(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for _, cancel := range p.cancels {
			cancel()
		}
	}
}

func (p *plug) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	key := new(int)
	p.cancels[key] = cancel
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.cancels, key)
		p.mu.Unlock()
		cancel()
	}()
	p.h.ServeHTTP(w, r.WithContext(ctx))
}

// A reload resumes the same member (no second seat, no "full") and the call
// comes back: first the later joiner reloads, then the first one.
func TestBrowserCallReload(t *testing.T) {
	srv := newTestServer(t)
	base := srv.URL()
	b := newBrowser(t)
	room := randomRoom(t)
	alice, bob := startCall(t, b, base, room, "")

	phase(t, "the call connects", func(t *testing.T) {
		waitConnected(t, 30*time.Second, alice, bob)
	})
	for _, pair := range [][2]*page{{bob, alice}, {alice, bob}} {
		reloaded, other := pair[0], pair[1]
		phase(t, reloaded.name+" reloads: the same member resumes, and the call comes back", func(t *testing.T) {
			id := reloaded.clientID()
			gen, err := eval[int](other, `window.tincanDebug.generations`, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			reloaded.reload(t)
			reloaded.waitState(t, "connected", 30*time.Second)
			// The other side must have dropped the stale connection for a new one.
			other.waitFor(t, "a new peer connection", fmt.Sprintf(`window.tincanDebug.generations > %d`, gen), 20*time.Second)
			other.waitState(t, "connected", 30*time.Second)
			if got := reloaded.clientID(); got != id {
				t.Errorf("%s: client id after reload %q, want %q (resumed)", reloaded.name, got, id)
			}
			if n := srv.roomInfo(t, room).Occupants; n != 2 {
				t.Errorf("after %s reloaded: occupants = %d, want 2", reloaded.name, n)
			}
			reloaded.waitVideo(t, 20*time.Second)
			t.Logf("%s reloaded and reconnected as %s", reloaded.name, id)
		})
	}
	screenshots(t, alice, bob)
}

// A duplicated tab copies sessionStorage, token included: the copy must take a
// seat of its own rather than resume the member of the original tab.
func TestBrowserCallDuplicatedTab(t *testing.T) {
	srv := newTestServer(t)
	base := srv.URL()
	b := newBrowser(t)
	room := randomRoom(t)
	alice := b.open(t, "alice", base+"/r/"+room)
	alice.waitState(t, "waiting", 20*time.Second)
	storage := alice.str(`JSON.stringify(Object.entries(sessionStorage))`)
	if !strings.Contains(storage, "token") {
		t.Fatalf("no token in alice's sessionStorage: %s", storage)
	}
	copyStorage := chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, cdppage.AddScriptToEvaluateOnNewDocument, cdppage.AddScriptToEvaluateOnNewDocumentParams{
			Source: `try { if (location.pathname.startsWith('/r/') && !sessionStorage.length)
				for (const [k, v] of ` + storage + `) sessionStorage.setItem(k, v); } catch (e) {}`,
		})
		return err
	})
	copyTab := b.open(t, "copy", base+"/r/"+room, copyStorage)
	waitConnected(t, 30*time.Second, alice, copyTab)
	if a, c := alice.clientID(), copyTab.clientID(); a == c {
		t.Errorf("the duplicated tab resumed alice's member %s", a)
	}
	if n := srv.roomInfo(t, room).Occupants; n != 2 {
		t.Errorf("occupants = %d, want 2", n)
	}
}

// A third page sees "full"; after one hangs up it can join.
func TestBrowserCallRoomFull(t *testing.T) {
	srv := newTestServer(t)
	base := srv.URL()
	b := newBrowser(t)
	room := randomRoom(t)
	alice, bob := startCall(t, b, base, room, "")
	var carol *page

	phase(t, "the call connects", func(t *testing.T) {
		waitConnected(t, 30*time.Second, alice, bob)
	})
	phase(t, "a third page sees the room full", func(t *testing.T) {
		carol = b.open(t, "carol", base+"/r/"+room)
		carol.waitState(t, "full", 20*time.Second)
		carol.waitFor(t, "the full view", `!document.getElementById('full-view').hidden &&
		document.getElementById('full-view').textContent.includes('full')`, 5*time.Second)
		screenshots(t, carol)
	})
	phase(t, "a hang-up leaves the room: the other sees it at once, without a timeout", func(t *testing.T) {
		if _, err := eval[bool](bob, `(document.getElementById('hangup').click(), true)`, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		bob.waitState(t, "ended", 10*time.Second)
		alice.waitState(t, "waiting", 15*time.Second)
	})
	phase(t, "the third page, retrying, joins and connects", func(t *testing.T) {
		if _, err := eval[bool](carol, `(document.getElementById('retry-full').click(), true)`, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		waitConnected(t, 30*time.Second, alice, carol)
	})
}

// noCamera makes getUserMedia fail in the tab, as on a computer without a
// camera or microphone (a DevTools script, so the page's CSP does not apply).
var noCamera = chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
	_, err := cdp.Call(ctx, t, cdppage.AddScriptToEvaluateOnNewDocument, cdppage.AddScriptToEvaluateOnNewDocumentParams{
		Source: `navigator.mediaDevices.getUserMedia = () =>
			Promise.reject(new DOMException('Requested device not found', 'NotFoundError'));`,
	})
	return err
})

func chat(t *testing.T, from, to *page, text string) {
	t.Helper()
	from.waitFor(t, "an open chat", `!document.getElementById('chat-input').disabled`, 10*time.Second)
	if _, err := eval[bool](from, `(() => {
		document.getElementById('chat-input').value = `+jsString(text)+`;
		document.getElementById('chat-form').requestSubmit();
		return true; })()`, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	to.waitFor(t, "the chat message "+text, `document.getElementById('chat-log').textContent.includes(`+jsString(text)+`)`, 10*time.Second)
}

// When getUserMedia fails the page still joins: it sees the other's camera,
// and the data channel chat works both ways.
func TestBrowserCallNoCamera(t *testing.T) {
	srv := newTestServer(t)
	base := srv.URL()
	b := newBrowser(t)
	room := randomRoom(t)
	alice := b.open(t, "alice", base+"/r/"+room)
	alice.waitState(t, "waiting", 20*time.Second)
	bob := b.open(t, "bob", base+"/r/"+room, noCamera)
	waitConnected(t, 30*time.Second, alice, bob)
	bob.waitFor(t, "the no-camera notice", `document.getElementById('media-notice').textContent.includes('chat only')`, 5*time.Second)
	bob.waitVideo(t, 20*time.Second)
	alice.waitFor(t, "a tile without video for bob", `document.querySelector('#remotes .tile.novideo')`, 10*time.Second)
	chat(t, bob, alice, "hello from bob")
	chat(t, alice, bob, "hi bob")
	screenshots(t, alice, bob)
}

// ?media=none on both sides: nobody sends media and the call still connects.
func TestBrowserCallChatOnly(t *testing.T) {
	srv := newTestServer(t)
	base := srv.URL()
	b := newBrowser(t)
	alice, bob := startCall(t, b, base, randomRoom(t), "?media=none")
	waitConnected(t, 30*time.Second, alice, bob)
	chat(t, bob, alice, "hello from bob")
	screenshots(t, alice, bob)
}

// Behind a proxy that buffers whole responses the event stream never arrives:
// the page must switch to long-poll by itself and connect.
func TestBrowserCallBufferingProxy(t *testing.T) {
	srv := newTestServer(t)
	base := srv.URL()
	proxy := httptest.NewServer(bufferingProxy(base, 0))
	t.Cleanup(proxy.Close)
	b := newBrowser(t)
	alice, bob := startCall(t, b, proxy.URL, randomRoom(t), "")
	waitConnected(t, 45*time.Second, alice, bob)
	for _, p := range []*page{alice, bob} {
		if tr := p.transport(); tr != "poll" {
			t.Errorf("%s: transport %q behind a buffering proxy, want poll", p.name, tr)
		}
	}
	screenshots(t, alice, bob)
}

// The landing page makes up a room name and a link, and opens the call; on a
// phone-sized screen the call page fits the width and keeps its buttons on screen.
func TestBrowserLandingAndPhone(t *testing.T) {
	srv := newTestServer(t)
	base := srv.URL()
	b := newBrowser(t)
	phone := chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile, chromedp.EmulateTouch, chromedp.EmulatePortrait)
	home := b.open(t, "phone", base+"/", phone)
	var room string

	phase(t, "the landing page makes up a room name and its link; New name makes another", func(t *testing.T) {
		var err error
		if room, err = eval[string](home, `document.getElementById('room').value`, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`^[A-Za-z0-9_-]{16,64}$`).MatchString(room) {
			t.Fatalf("generated room name %q", room)
		}
		if link := home.str(`document.getElementById('link').textContent`); link != base+"/r/"+room {
			t.Errorf("link %q, want %q", link, base+"/r/"+room)
		}
		if _, err := eval[bool](home, `(document.getElementById('generate').click(), true)`, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if again := home.str(`document.getElementById('room').value`); again == room || again == "" {
			t.Errorf("New name gave %q after %q", again, room)
		}
		screenshots(t, home)
	})
	phase(t, "the form opens the call page of the room", func(t *testing.T) {
		if _, err := eval[bool](home, `(document.getElementById('room').value = `+jsString(room)+`,
		document.getElementById('start-form').requestSubmit(), true)`, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		home.waitFor(t, "the call page", `location.pathname === `+jsString("/r/"+room), 10*time.Second)
		home.waitState(t, "waiting", 20*time.Second)
	})
	phase(t, "the call connects, and on the phone the page fits the screen", func(t *testing.T) {
		desk := b.open(t, "desktop", base+"/r/"+room)
		waitConnected(t, 30*time.Second, home, desk)
		home.waitVideo(t, 20*time.Second)
		home.waitFor(t, "a layout that fits the phone", `document.documentElement.scrollWidth <= innerWidth &&
		document.getElementById('hangup').getBoundingClientRect().bottom <= innerHeight`, 5*time.Second)
		screenshots(t, home, desk)
	})
}

// ---- tincan.js ----

// TestBrowserTincanJS runs the scenarios of testdata/browser/tincan_test.js
// in Chromium, against the real server behind proxies that misbehave on purpose.
func TestBrowserTincanJS(t *testing.T) {
	srv := newTestServer(t)
	base := srv.URL()
	h := httptest.NewServer(newHarness(base))
	t.Cleanup(h.Close)
	b := newBrowser(t)
	p := b.open(t, "js", h.URL+"/testdata/tincan_test.html")
	p.waitFor(t, "the scenarios", `window.runScenario`, 10*time.Second)
	names, err := eval[[]string](p, `Object.keys(window.scenarios)`, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"sse_ready", "fallback_buffered", "fallback_errors", "sse_recovers", "sse_acks", "poll_gateway_timeout",
		"resume_sse_gap", "resume_reload", "dedupe_sse", "dedupe_poll",
		"idempotent_retry", "room_full", "password", "send_order", "batch_order", "batch_retry", "batch_fallback", "leave",
	}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Errorf("scenarios %v, want %v", names, want)
	}
	for _, name := range want {
		t.Run(name, func(t *testing.T) {
			type result struct {
				OK     bool   `json:"ok"`
				Detail string `json:"detail"`
			}
			res, err := eval[result](p, `window.runScenario(`+jsString(name)+`)`, 60*time.Second)
			if err != nil {
				t.Fatalf("running %s: %v", name, err)
			}
			if !res.OK {
				t.Fatalf("%s failed: %s", name, res.Detail)
			}
			t.Logf("%s: %s", name, res.Detail)
		})
	}
}

// A page on another origin imports tincan.js from the server and uses it
// (SSE and long-poll) when the server allows that origin.
func TestBrowserTincanJSCrossOrigin(t *testing.T) {
	site := httptest.NewServer(http.StripPrefix("/testdata/", http.FileServer(http.Dir("testdata/browser"))))
	t.Cleanup(site.Close)
	srv := newTestServer(t, withFlags("-allow-origin", site.URL))
	base := srv.URL()
	b := newBrowser(t)
	p := b.open(t, "embed", site.URL+"/testdata/cross_origin.html?server="+url.QueryEscape(base))
	type result struct {
		OK     bool   `json:"ok"`
		Detail string `json:"detail"`
	}
	res, err := eval[result](p, `window.result`, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK {
		t.Fatalf("cross-origin use failed: %s", res.Detail)
	}
	t.Log(res.Detail)
}

// ---- proxies ----

var hopHeaders = []string{
	"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func copyHeaders(dst, src http.Header) {
	for k, vs := range src {
		for _, v := range vs {
			dst.Add(k, v)
		}
	}
	for _, h := range hopHeaders {
		dst.Del(h)
	}
}

// bufferingProxy forwards each request to backend and sends the answer only
// once the whole upstream body has arrived, as a proxy with response buffering
// does: an event stream never gets through. With timeout > 0 it answers 504
// when the upstream takes longer, as a proxy read timeout does.
func bufferingProxy(backend string, timeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		out, err := http.NewRequestWithContext(ctx, r.Method, backend+r.URL.RequestURI(), r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		copyHeaders(out.Header, r.Header)
		out.ContentLength = r.ContentLength
		res, err := http.DefaultTransport.RoundTrip(out)
		var body []byte
		if err == nil {
			body, err = io.ReadAll(res.Body)
			res.Body.Close()
		}
		if err != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				http.Error(w, "504 Gateway Time-out", http.StatusGatewayTimeout)
			} else {
				http.Error(w, "502 Bad Gateway", http.StatusBadGateway)
			}
			return
		}
		copyHeaders(w.Header(), res.Header)
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.WriteHeader(res.StatusCode)
		w.Write(body)
	})
}

// streamingProxy is a well-behaved reverse proxy: it flushes at once.
func streamingProxy(backend string) *httputil.ReverseProxy {
	u, err := url.Parse(backend)
	if err != nil {
		panic(err)
	}
	return &httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(u) },
		FlushInterval: -1,
		ErrorLog:      log.New(io.Discard, "", 0),
	}
}

func isEvents(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/events")
}

func isPoll(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/messages")
}

// newHarness serves the tincan.js test page, and the real server at backend
// (so /static/tincan.js is same-origin) directly and under prefixes that each
// break something:
//
//	/buffered/    buffers whole responses (no event stream gets through)
//	/slow/        buffers, and answers 504 after 1.5 s (a proxy read timeout)
//	/sse-broken/  answers 502 to every event stream
//	/cut/         cuts each event stream after 2 s
//	/dup/         sends every message twice, and the previous poll answer's last one again
//	/lost-post/   commits a message POST upstream but answers the first try of each
//	              Idempotency-Key with 502, as if the answer were lost
//	/slow-batch/  holds each batch POST (a JSON array) for 300 ms before passing it on
//	/no-batch/    answers a batch POST 400 bad_json, as a server from before batches did
func newHarness(backend string) http.Handler {
	direct := streamingProxy(backend)
	mux := http.NewServeMux()
	mux.Handle("/testdata/", http.StripPrefix("/testdata/", http.FileServer(http.Dir("testdata/browser"))))
	mux.Handle("/buffered/", http.StripPrefix("/buffered", bufferingProxy(backend, 0)))
	mux.Handle("/slow/", http.StripPrefix("/slow", bufferingProxy(backend, 1500*time.Millisecond)))
	mux.Handle("/sse-broken/", http.StripPrefix("/sse-broken", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isEvents(r) {
			http.Error(w, "502 Bad Gateway", http.StatusBadGateway)
			return
		}
		direct.ServeHTTP(w, r)
	})))
	// Event streams fail twice, then work: the client falls back to
	// long-poll, and must come back to SSE.
	var sseFailures atomic.Int32
	mux.Handle("/sse-recovers/", http.StripPrefix("/sse-recovers", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isEvents(r) && sseFailures.Add(1) <= 2 {
			http.Error(w, "502 Bad Gateway", http.StatusBadGateway)
			return
		}
		direct.ServeHTTP(w, r)
	})))
	mux.Handle("/cut/", http.StripPrefix("/cut", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isEvents(r) {
			ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			r = r.WithContext(ctx)
		}
		direct.ServeHTTP(w, r)
	})))
	mux.Handle("/dup/", http.StripPrefix("/dup", &dupProxy{backend: backend, direct: direct, last: map[string]json.RawMessage{}}))
	lost := &lostPostProxy{backend: backend, direct: direct, seen: map[string]bool{}}
	mux.Handle("/lost-post/", http.StripPrefix("/lost-post", lost))
	mux.Handle("/slow-batch/", http.StripPrefix("/slow-batch", onBatchPost(direct, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(300 * time.Millisecond):
			direct.ServeHTTP(w, r)
		case <-r.Context().Done():
		}
	})))
	mux.Handle("/no-batch/", http.StripPrefix("/no-batch", onBatchPost(direct, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"type":"about:blank","title":"Bad Request","status":400,"code":"bad_json","detail":"body must be a JSON object"}`)
	})))
	mux.Handle("/", direct)
	return mux
}

// onBatchPost hands message POSTs whose body is a JSON array to batch, and
// every other request to next.
func onBatchPost(next http.Handler, batch http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/messages") {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "400 reading the body", http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if trimmed := bytes.TrimLeft(body, " \t\r\n"); len(trimmed) > 0 && trimmed[0] == '[' {
			batch(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// dupProxy repeats messages, so that the client must drop duplicate ids.
type dupProxy struct {
	backend string
	direct  http.Handler
	mu      sync.Mutex
	last    map[string]json.RawMessage // by Authorization: last message of the previous poll answer
}

func (d *dupProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case isEvents(r):
		d.events(w, r)
	case isPoll(r):
		d.poll(w, r)
	default:
		d.direct.ServeHTTP(w, r)
	}
}

func (d *dupProxy) upstream(r *http.Request) (*http.Response, error) {
	out, err := http.NewRequestWithContext(r.Context(), r.Method, d.backend+r.URL.RequestURI(), nil)
	if err != nil {
		return nil, err
	}
	copyHeaders(out.Header, r.Header)
	return http.DefaultTransport.RoundTrip(out)
}

func (d *dupProxy) events(w http.ResponseWriter, r *http.Request) {
	res, err := d.upstream(r)
	if err != nil {
		http.Error(w, "502 Bad Gateway", http.StatusBadGateway)
		return
	}
	defer res.Body.Close()
	copyHeaders(w.Header(), res.Header)
	w.WriteHeader(res.StatusCode)
	rc := http.NewResponseController(w)
	rc.Flush()
	br := bufio.NewReader(res.Body)
	var frame []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		if line != "" {
			frame = append(frame, line)
			continue
		}
		text := strings.Join(frame, "\n") + "\n\n"
		frame = frame[:0]
		isMessage := strings.Contains(text, "\ndata:") || strings.HasPrefix(text, "data:")
		isMessage = isMessage && !strings.Contains(text, "event:")
		n := 1
		if isMessage {
			n = 2
		}
		for range n {
			if _, err := io.WriteString(w, text); err != nil {
				return
			}
		}
		rc.Flush()
	}
}

func (d *dupProxy) poll(w http.ResponseWriter, r *http.Request) {
	res, err := d.upstream(r)
	if err != nil {
		http.Error(w, "502 Bad Gateway", http.StatusBadGateway)
		return
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		http.Error(w, "502 Bad Gateway", http.StatusBadGateway)
		return
	}
	var v struct {
		Messages []json.RawMessage `json:"messages"`
		Next     json.RawMessage   `json:"next"`
	}
	if res.StatusCode != http.StatusOK || json.Unmarshal(body, &v) != nil {
		copyHeaders(w.Header(), res.Header)
		w.WriteHeader(res.StatusCode)
		w.Write(body)
		return
	}
	who := r.Header.Get("Authorization") + r.URL.Query().Get("token")
	var out []json.RawMessage
	d.mu.Lock()
	if prev, ok := d.last[who]; ok {
		out = append(out, prev)
	}
	if len(v.Messages) > 0 {
		d.last[who] = v.Messages[len(v.Messages)-1]
	}
	d.mu.Unlock()
	for _, m := range v.Messages {
		out = append(out, m, m)
	}
	if out == nil {
		out = []json.RawMessage{}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(map[string]any{"messages": out, "next": v.Next})
}

// lostPostProxy loses the answer to the first try of each message POST.
type lostPostProxy struct {
	backend string
	direct  http.Handler
	mu      sync.Mutex
	seen    map[string]bool
}

func (l *lostPostProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Idempotency-Key")
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/messages") || key == "" {
		l.direct.ServeHTTP(w, r)
		return
	}
	l.mu.Lock()
	first := !l.seen[key]
	l.seen[key] = true
	l.mu.Unlock()
	if !first {
		l.direct.ServeHTTP(w, r)
		return
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, l.backend+r.URL.RequestURI(), r.Body)
	if err == nil {
		copyHeaders(out.Header, r.Header)
		out.ContentLength = r.ContentLength
		var res *http.Response
		if res, err = http.DefaultTransport.RoundTrip(out); err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	}
	http.Error(w, "502 Bad Gateway", http.StatusBadGateway) // the answer is lost
}
