//go:build browser

// Browser tests of the call page as a newcomer meets it (issue 18, "the
// page"): the chat's placeholder shown whole, a footer in plain words, the
// other member's name from the application's join token on its picture, a
// readable room name on a phone, and a chat panel with a heading. Each test
// measures the page in Chromium and saves screenshots
// (contract_browser_test.go has the browser, the pages and how to run them).
package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"
)

// placeholderFit is what TestBrowserPagePlaceholderFits measures of the chat input.
type placeholderFit struct {
	Placeholder  string  `json:"placeholder"`
	Text         float64 `json:"text"`    // the placeholder's width in the input's font
	Content      float64 `json:"content"` // the input's width inside its padding
	ScrollWidth  float64 `json:"scrollWidth"`
	ClientWidth  float64 `json:"clientWidth"`
	WindowWidth  float64 `json:"windowWidth"`
	InputVisible bool    `json:"inputVisible"`
}

func measurePlaceholder(t *testing.T, p *page) placeholderFit {
	t.Helper()
	f, err := eval[placeholderFit](p, `(() => {
		const input = document.getElementById('chat-input');
		const cs = getComputedStyle(input);
		const ctx = document.createElement('canvas').getContext('2d');
		ctx.font = cs.font;
		return {
			placeholder: input.placeholder,
			text: ctx.measureText(input.placeholder).width,
			content: input.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight),
			scrollWidth: input.scrollWidth, clientWidth: input.clientWidth,
			windowWidth: innerWidth, inputVisible: input.getClientRects().length > 0,
		};
	})()`, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f placeholderFit) check(t *testing.T, what, want string) {
	t.Helper()
	t.Logf("%s: placeholder %q: %.1f px of text in %.1f px (input %v/%v px, window %v px)", what, f.Placeholder, f.Text, f.Content, f.ScrollWidth, f.ClientWidth, f.WindowWidth)
	if f.Placeholder != want {
		t.Errorf("%s: placeholder %q, want %q", what, f.Placeholder, want)
	}
	if !f.InputVisible || f.Content <= 0 {
		t.Errorf("%s: the chat input is not shown", what)
	}
	if f.Text > f.Content {
		t.Errorf("%s: the placeholder %q is %.1f px wide in a %.1f px wide input: it is cut", what, f.Placeholder, f.Text, f.Content)
	}
	if f.ScrollWidth > f.ClientWidth {
		t.Errorf("%s: the chat input scrolls (%v px of content in %v px)", what, f.ScrollWidth, f.ClientWidth)
	}
}

// The chat input's placeholder is shown whole in a laptop's window (1280 px,
// where the chat is a column beside the picture), at 1024 px and on a 390 px
// phone: before the call connects ("Chat opens with the call") and after
// ("Message").
func TestBrowserPagePlaceholderFits(t *testing.T) {
	srv := newTestServer(t)
	base := srv.URL()
	b := newBrowser(t)
	room := randomRoom(t)
	var alice, bob *page

	phase(t, "waiting, at 1280, 1024 and 390 px", func(t *testing.T) {
		alice = b.open(t, "alice", base+"/r/"+room, chromedp.EmulateViewport(1280, 800))
		alice.waitState(t, "waiting", 20*time.Second)
		measurePlaceholder(t, alice).check(t, "waiting at 1280 px", "Chat opens with the call")
		for _, c := range []struct {
			name string
			vp   chromedp.Action[chromedp.Void]
		}{{"laptop1024", chromedp.EmulateViewport(1024, 700)}, {"phone", phoneViewport}} {
			p := b.open(t, c.name, base+"/r/"+randomRoom(t), c.vp)
			p.waitState(t, "waiting", 20*time.Second)
			measurePlaceholder(t, p).check(t, "waiting, "+c.name, "Chat opens with the call")
			screenshots(t, p)
		}
		screenshots(t, alice)
	})
	phase(t, "connected, at 1280 px", func(t *testing.T) {
		bob = b.open(t, "bob", base+"/r/"+room, chromedp.EmulateViewport(1280, 800))
		waitConnected(t, 30*time.Second, alice, bob)
		for _, p := range []*page{alice, bob} {
			p.waitFor(t, "an open chat", `!document.getElementById('chat-input').disabled`, 10*time.Second)
			measurePlaceholder(t, p).check(t, p.name+" connected at 1280 px", "Message")
		}
		screenshots(t, alice, bob)
	})
}

// footerText is the footer of p once the page's state matches cond.
func footerText(t *testing.T, p *page, cond string) string {
	t.Helper()
	p.waitFor(t, "the footer for "+cond, cond, 45*time.Second)
	return p.str(`document.getElementById('transport').textContent`)
}

func checkFooter(t *testing.T, what, got, want string) {
	t.Helper()
	t.Logf("%s: footer %q", what, got)
	if got != want {
		t.Errorf("%s: footer %q, want %q", what, got, want)
	}
	for _, jargon := range []string{"event stream", "Signaling", "long-poll", "SSE"} {
		if strings.Contains(got, jargon) {
			t.Errorf("%s: the footer %q speaks of %q", what, got, jargon)
		}
	}
}

// The footer says in plain words how the page reaches the server: connected
// (on the event stream), connected by polling (asked for, or because a
// proxy holds back the stream: then it says so), and reconnecting while the
// server cannot be reached, then connected again. The jargon ("event
// stream", "long-poll") is left to its tooltip.
func TestBrowserPageFooterPlainWords(t *testing.T) {
	srv := newTestServer(t)
	base := srv.URL()
	// The proxies close after the browser (cleanups run last first): a
	// proxy's Close waits for the streams open through it.
	buffered := httptest.NewServer(bufferingProxy(base, 0))
	t.Cleanup(buffered.Close)
	cable := &plug{h: streamingProxy(base), cancels: map[*int]context.CancelFunc{}}
	unplugged := httptest.NewServer(cable)
	t.Cleanup(unplugged.Close)
	b := newBrowser(t)

	phase(t, "on the event stream", func(t *testing.T) {
		p := b.open(t, "sse", base+"/r/"+randomRoom(t))
		got := footerText(t, p, `document.documentElement.dataset.transport === 'sse'`)
		checkFooter(t, "event stream", got, "Connected to the server.")
		if title := p.str(`document.getElementById('transport').title`); !strings.Contains(title, "Server-Sent Events") {
			t.Errorf("the footer's tooltip %q does not name the transport", title)
		}
		screenshots(t, p)
	})
	phase(t, "long-poll, as the link asks", func(t *testing.T) {
		p := b.open(t, "poll", base+"/r/"+randomRoom(t)+"?transport=poll")
		got := footerText(t, p, `document.documentElement.dataset.transport === 'poll'`)
		checkFooter(t, "long-poll", got, "Connected to the server, by polling.")
		screenshots(t, p)
	})
	phase(t, "long-poll behind a proxy that buffers the event stream", func(t *testing.T) {
		room := randomRoom(t)
		p := b.open(t, "buffered", buffered.URL+"/r/"+room)
		p.waitState(t, "waiting", 20*time.Second)
		// Someone joins: the long-poll is answered with the news.
		b.open(t, "other", base+"/r/"+room)
		got := footerText(t, p, `document.documentElement.dataset.transport === 'poll'`)
		checkFooter(t, "behind a buffering proxy", got,
			"Connected to the server, by polling: this network holds back live updates, so the call may take a moment longer to set up.")
		screenshots(t, p)
	})
	phase(t, "the server out of reach, then back", func(t *testing.T) {
		p := b.open(t, "unplugged", unplugged.URL+"/r/"+randomRoom(t))
		footerText(t, p, `document.documentElement.dataset.transport === 'sse'`)
		cable.set(true)
		got := footerText(t, p, `document.documentElement.dataset.signaling === 'down'`)
		checkFooter(t, "server unreachable", got, "Reconnecting to the server…")
		screenshots(t, p)
		cable.set(false)
		got = footerText(t, p, `document.documentElement.dataset.signaling === 'up' && document.documentElement.dataset.transport === 'sse'`)
		checkFooter(t, "server back", got, "Connected to the server.")
	})
}

// captions are the names on a page's remote pictures and the chat's notices.
type captions struct {
	Names  []string `json:"names"`
	Events []string `json:"events"`
}

func remoteCaptions(t *testing.T, p *page) captions {
	t.Helper()
	c, err := eval[captions](p, `({
		names: [...document.querySelectorAll('#remotes .tile.remote figcaption')].map((c) => c.textContent),
		events: [...document.querySelectorAll('#chat-log li.event')].map((li) => li.textContent),
	})`, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// On a server with -auth jwt, the picture of a member whose join token has
// a name is captioned with that name, whether it joined first (the other
// learns it from the join answer's members) or second (from its peer-joined
// event); a member whose token has no name stays "Guest". The chat says who
// joined by name.
func TestBrowserPagePeerNames(t *testing.T) {
	srv := newTestServer(t, withEnv("TINCAN_AUTH", "jwt"), withEnv("TINCAN_JWT_SECRET", testJWTSecret))
	base := srv.URL()
	const name = "Ada Lovelace"
	for _, c := range []struct {
		order      string
		namedFirst bool
	}{{"the named member joins first", true}, {"the named member joins second", false}} {
		phase(t, c.order, func(t *testing.T) {
			b := newBrowser(t)
			room := randomRoom(t)
			token := func(sub, name string) string {
				claims := jwt.MapClaims{"sub": sub, "room": room, "exp": time.Now().Add(time.Hour).Unix()}
				if name != "" {
					claims["name"] = name
				}
				return mintJWT(t, claims)
			}
			openNamed := func() *page { return b.open(t, "ada", base+"/r/"+room+"#token="+token("ada-id", name)) }
			openAnon := func() *page { return b.open(t, "anon", base+"/r/"+room+"#token="+token("anon-id", "")) }
			var ada, anon *page
			if c.namedFirst {
				ada = openNamed()
				ada.waitState(t, "waiting", 20*time.Second)
				anon = openAnon()
			} else {
				anon = openAnon()
				anon.waitState(t, "waiting", 20*time.Second)
				ada = openNamed()
			}
			waitConnected(t, 30*time.Second, ada, anon)
			ada.waitFor(t, "a remote tile", `document.querySelector('#remotes .tile.remote figcaption')`, 10*time.Second)
			anon.waitFor(t, "a remote tile", `document.querySelector('#remotes .tile.remote figcaption')`, 10*time.Second)

			seen := remoteCaptions(t, anon)
			if len(seen.Names) != 1 || seen.Names[0] != name {
				t.Errorf("the unnamed member's page captions the other %q, want [%q]", seen.Names, name)
			}
			if !c.namedFirst {
				want := name + " joined the call."
				if !contains(seen.Events, want) {
					t.Errorf("the chat of the member there first says %q, want %q", seen.Events, want)
				}
			}
			seenByAda := remoteCaptions(t, ada)
			if len(seenByAda.Names) != 1 || seenByAda.Names[0] != "Guest" {
				t.Errorf("the named member's page captions the unnamed one %q, want [Guest]", seenByAda.Names)
			}
			if c.namedFirst && !contains(seenByAda.Events, "Someone joined the call.") {
				t.Errorf("the chat of the named member says %q, want %q", seenByAda.Events, "Someone joined the call.")
			}
			// The caption is drawn whole on the picture.
			fits, err := eval[bool](anon, `(() => { const c = document.querySelector('#remotes .tile.remote figcaption');
				return c.scrollWidth <= c.clientWidth && c.getBoundingClientRect().width > 0; })()`, 5*time.Second)
			if err != nil || !fits {
				t.Errorf("the caption %q is cut or not shown (%v)", name, err)
			}
			screenshots(t, ada, anon)

			// When the named member leaves, the other's chat says who left.
			if _, err := eval[bool](ada, `(document.getElementById('hangup').click(), true)`, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			anon.waitFor(t, "the notice that "+name+" left", `[...document.querySelectorAll('#chat-log li.event')].some((li) => li.textContent === `+jsString(name+" left the call.")+`)`, 15*time.Second)
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// roomNameBox is what TestBrowserPageRoomNamePhone measures of the header's room name.
type roomNameBox struct {
	Text         string  `json:"text"`
	ScrollWidth  float64 `json:"scrollWidth"`
	ClientWidth  float64 `json:"clientWidth"`
	ScrollHeight float64 `json:"scrollHeight"`
	ClientHeight float64 `json:"clientHeight"`
	FontSize     float64 `json:"fontSize"`
	Width        float64 `json:"width"`
	// The rendered text's rectangles lie within the element's width.
	Inside bool `json:"inside"`
	// The status beside it, measured the same way.
	Status struct {
		Text         string  `json:"text"`
		ScrollWidth  float64 `json:"scrollWidth"`
		ClientWidth  float64 `json:"clientWidth"`
		ScrollHeight float64 `json:"scrollHeight"`
		ClientHeight float64 `json:"clientHeight"`
		FontSize     float64 `json:"fontSize"`
	} `json:"status"`
}

func measureRoomName(t *testing.T, p *page) roomNameBox {
	t.Helper()
	r, err := eval[roomNameBox](p, `(() => {
		const box = (e) => ({ text: e.textContent, scrollWidth: e.scrollWidth, clientWidth: e.clientWidth,
			scrollHeight: e.scrollHeight, clientHeight: e.clientHeight, fontSize: parseFloat(getComputedStyle(e).fontSize) });
		const e = document.getElementById('room-name');
		const r = e.getBoundingClientRect();
		const range = document.createRange();
		range.selectNodeContents(e);
		// (Across only: a glyph's box is taller than the tight line height.)
		const inside = [...range.getClientRects()].every((q) => q.left >= r.left - 0.5 && q.right <= r.right + 0.5);
		return { ...box(e), width: r.width, inside, status: box(document.getElementById('status')) };
	})()`, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// On a 390 px phone the room name "breakfast-meeting" is shown whole (not
// cut to "br…") in readable type, and so is the status beside it (in short
// words there), waiting and connected, with the header still one row; so is
// a name as long as the landing page makes up; the longest room name (64
// characters) is cut, the header still one row.
func TestBrowserPageRoomNamePhone(t *testing.T) {
	srv := newTestServer(t)
	base := srv.URL()
	b := newBrowser(t)
	const room = "breakfast-meeting" // a server of its own: no other test's room
	check := func(t *testing.T, p *page, what, room, status string) {
		t.Helper()
		r := measureRoomName(t, p)
		t.Logf("%s: room name %q in %v×%v px (content %v×%v), %v px type; status %q in %v×%v px (content %v×%v)", what,
			r.Text, r.ClientWidth, r.ClientHeight, r.ScrollWidth, r.ScrollHeight, r.FontSize,
			r.Status.Text, r.Status.ClientWidth, r.Status.ClientHeight, r.Status.ScrollWidth, r.Status.ScrollHeight)
		if r.Text != room {
			t.Errorf("%s: the room name reads %q, want %q", what, r.Text, room)
		}
		if r.ScrollWidth > r.ClientWidth || r.ScrollHeight > r.ClientHeight || !r.Inside {
			t.Errorf("%s: the room name %q is cut: %v×%v px of text in a %v×%v px box (inside %v)", what, room, r.ScrollWidth, r.ScrollHeight, r.ClientWidth, r.ClientHeight, r.Inside)
		}
		if r.FontSize < 12 {
			t.Errorf("%s: the room name is set in %v px type, too small to read", what, r.FontSize)
		}
		if r.Status.Text != status {
			t.Errorf("%s: the status reads %q, want %q", what, r.Status.Text, status)
		}
		if s := r.Status; s.ScrollWidth > s.ClientWidth || s.ScrollHeight > s.ClientHeight || s.FontSize < 12 {
			t.Errorf("%s: the status %q is cut or too small: %v×%v px of text in %v×%v px, %v px type", what, s.Text, s.ScrollWidth, s.ScrollHeight, s.ClientWidth, s.ClientHeight, s.FontSize)
		}
		l := measure(t, p, "hangup")
		l.noScroll(t, what, false)
		l.oneRow(t, what, 4)
	}
	var phone, desk *page

	phase(t, "waiting", func(t *testing.T) {
		phone = b.open(t, "phone", base+"/r/"+room, phoneViewport)
		phone.waitState(t, "waiting", 20*time.Second)
		check(t, phone, "waiting", room, "Waiting")
		screenshots(t, phone)
	})
	phase(t, "connected", func(t *testing.T) {
		desk = b.open(t, "desktop", base+"/r/"+room)
		waitConnected(t, 30*time.Second, phone, desk)
		check(t, phone, "connected", room, "Connected")
		screenshots(t, phone)
	})
	phase(t, "names as long as the landing page makes up", func(t *testing.T) {
		home := b.open(t, "landing", base+"/", phoneViewport)
		made := home.str(`document.getElementById('room').value`)
		// The longest it makes: two words of seven letters and ten more.
		for i, name := range []string{made, "kestrel-juniper-abcdefghij"} {
			p := b.open(t, fmt.Sprintf("made%d", i), base+"/r/"+name, phoneViewport)
			p.waitState(t, "waiting", 20*time.Second)
			check(t, p, "waiting in "+name, name, "Waiting")
			screenshots(t, p)
		}
	})
	phase(t, "the longest name: the header is still one row", func(t *testing.T) {
		long := randomRoom(t)
		long += strings.Repeat("x", 64-len(long))
		lp := b.open(t, "longest", base+"/r/"+long, phoneViewport)
		lp.waitState(t, "waiting", 20*time.Second)
		l := measure(t, lp, "hangup")
		l.noScroll(t, "the longest name", false)
		l.oneRow(t, "the longest name", 4)
		if title := lp.str(`document.getElementById('room-name').title`); title != long {
			t.Errorf("the room name's tooltip %q, want the whole name", title)
		}
		screenshots(t, lp)
	})
}

// chatPanel is what TestBrowserPageChatHeading measures of the chat panel.
type chatPanel struct {
	Heading        string  `json:"heading"`
	HeadingTag     string  `json:"headingTag"`
	HeadingShown   bool    `json:"headingShown"`
	Labelled       string  `json:"labelled"` // the panel's accessible name, by aria-labelledby
	Empty          string  `json:"empty"`
	EmptyShown     bool    `json:"emptyShown"`
	EmptyAboveForm bool    `json:"emptyAboveForm"`
	HeadingTop     float64 `json:"headingTop"`
	PanelTop       float64 `json:"panelTop"`
	PanelBottom    float64 `json:"panelBottom"`
}

func measureChat(t *testing.T, p *page) chatPanel {
	t.Helper()
	c, err := eval[chatPanel](p, `(() => {
		const panel = document.querySelector('section.chat');
		const h = panel.querySelector('h2, h3');
		const empty = document.getElementById('chat-empty');
		const shown = (e) => !!e && e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden';
		const pr = panel.getBoundingClientRect();
		const lb = panel.getAttribute('aria-labelledby');
		return {
			heading: h ? h.textContent : '', headingTag: h ? h.tagName : '', headingShown: shown(h),
			labelled: lb ? document.getElementById(lb).textContent : (panel.getAttribute('aria-label') || ''),
			empty: empty ? empty.textContent : '', emptyShown: shown(empty),
			emptyAboveForm: shown(empty) && empty.getBoundingClientRect().bottom <= document.getElementById('chat-form').getBoundingClientRect().top + 0.5,
			headingTop: h ? h.getBoundingClientRect().top : -1, panelTop: pr.top, panelBottom: pr.bottom,
		};
	})()`, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const chatEmptyLine = "No messages yet. They go only to the people in this call, and are not kept."

// The chat panel has a heading "Chat" (which names the panel) at its top and,
// while nobody has written, a line that says so and where messages go, in a
// laptop's window and on a phone; the line goes with the first message (a
// notice that someone joined does not count), and the heading stays.
func TestBrowserPageChatHeading(t *testing.T) {
	srv := newTestServer(t)
	base := srv.URL()
	b := newBrowser(t)
	room := randomRoom(t)
	check := func(t *testing.T, p *page, what string, emptyShown bool) {
		t.Helper()
		c := measureChat(t, p)
		t.Logf("%s: %+v", what, c)
		if c.Heading != "Chat" || c.HeadingTag != "H2" || !c.HeadingShown {
			t.Errorf("%s: chat heading %q (<%s>, shown %v), want a shown <h2> Chat", what, c.Heading, c.HeadingTag, c.HeadingShown)
		}
		if c.Labelled != "Chat" {
			t.Errorf("%s: the chat panel is named %q, want Chat", what, c.Labelled)
		}
		if c.HeadingTop < c.PanelTop || c.HeadingTop > c.PanelTop+24 {
			t.Errorf("%s: the heading's top at %v px is not at the top of the panel (%v px)", what, c.HeadingTop, c.PanelTop)
		}
		if emptyShown {
			if !c.EmptyShown || c.Empty != chatEmptyLine || !c.EmptyAboveForm {
				t.Errorf("%s: the empty chat's line %q (shown %v, above the input %v), want %q shown", what, c.Empty, c.EmptyShown, c.EmptyAboveForm, chatEmptyLine)
			}
		} else if c.EmptyShown {
			t.Errorf("%s: the empty chat's line %q is still shown", what, c.Empty)
		}
	}
	var alice, phone *page

	phase(t, "waiting: heading and the empty line, at 1280 px and on a phone", func(t *testing.T) {
		alice = b.open(t, "alice", base+"/r/"+room, chromedp.EmulateViewport(1280, 800))
		alice.waitState(t, "waiting", 20*time.Second)
		check(t, alice, "alice waiting", true)
		screenshots(t, alice)
	})
	phase(t, "connected, a notice but no message yet: the empty line stays", func(t *testing.T) {
		phone = b.open(t, "phone", base+"/r/"+room, phoneViewport)
		waitConnected(t, 30*time.Second, alice, phone)
		alice.waitFor(t, "the notice that someone joined", `document.querySelector('#chat-log li.event')`, 10*time.Second)
		check(t, alice, "alice connected", true)
		check(t, phone, "phone connected", true)
		measure(t, alice, "hangup", "chat-input", "chat-send", "transport").noScroll(t, "alice connected", true)
		screenshots(t, alice, phone)
	})
	phase(t, "after the first message the line goes, the heading stays", func(t *testing.T) {
		chat(t, phone, alice, "good morning")
		check(t, alice, "alice after a message", false)
		check(t, phone, "phone after a message", false)
		screenshots(t, alice, phone)
	})
}
