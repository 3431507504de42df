//go:build browser

// Browser tests of the page's layout and messages: what a person sees on a
// phone and in a laptop's window, measured in Chromium (contract_browser_test.go
// has the browser, the pages and how to run them).
package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// phoneViewport is a 390 px wide phone, held upright.
var phoneViewport = chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile, chromedp.EmulateTouch, chromedp.EmulatePortrait)

// The room name hint of the landing page turns into an error, in the error
// colour, while the name is not one; the form then opens nothing.
func TestBrowserLandingNameHint(t *testing.T) {
	srv := newTestServer(t)
	b := newBrowser(t)
	home := b.open(t, "landing", srv.URL()+"/")
	type hint struct {
		Error   bool    `json:"error"`   // the hint has the error class
		Color   string  `json:"color"`   // its computed colour
		Bad     string  `json:"bad"`     // the page's error colour (--bad)
		Muted   string  `json:"muted"`   // the page's colour of hints (--muted)
		Height  float64 `json:"height"`  // its rendered height
		Bottom  float64 `json:"bottom"`  // where it ends
		Invalid string  `json:"invalid"` // the input's aria-invalid
		Link    string  `json:"link"`
	}
	typeName := func(t *testing.T, name string) hint {
		t.Helper()
		h, err := eval[hint](home, `(() => {
			const input = document.getElementById('room');
			input.value = `+jsString(name)+`;
			input.dispatchEvent(new Event('input'));
			const colour = (v) => { const e = document.createElement('span'); e.style.color = 'var(' + v + ')';
				document.body.append(e); const c = getComputedStyle(e).color; e.remove(); return c; };
			const h = document.getElementById('room-hint');
			const r = h.getBoundingClientRect();
			return { error: h.classList.contains('error'), color: getComputedStyle(h).color,
				bad: colour('--bad'), muted: colour('--muted'), height: r.height, bottom: r.bottom,
				invalid: input.getAttribute('aria-invalid'), link: document.getElementById('link').textContent };
		})()`, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}

	phase(t, "a name with a space: the hint shows in the error colour, no link", func(t *testing.T) {
		h := typeName(t, "bad name")
		if !h.Error || h.Color != h.Bad || h.Bad == h.Muted {
			t.Errorf("hint of an invalid name: error class %v, colour %s; want the error colour %s (hints are %s)", h.Error, h.Color, h.Bad, h.Muted)
		}
		if h.Height <= 0 || h.Bottom > 800 {
			t.Errorf("hint not on screen: height %v, bottom %v", h.Height, h.Bottom)
		}
		if h.Invalid != "true" || h.Link != "" {
			t.Errorf("aria-invalid %q, link %q; want true and none", h.Invalid, h.Link)
		}
		screenshots(t, home)
	})
	phase(t, "the form does not open a call for it", func(t *testing.T) {
		if _, err := eval[bool](home, `(document.getElementById('start-form').requestSubmit(), true)`, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond) // a navigation would have begun by now
		if path := home.str(`location.pathname`); path != "/" {
			t.Errorf("after submitting an invalid name the page is at %q", path)
		}
	})
	phase(t, "a good name: the hint is a hint again, and the link is there", func(t *testing.T) {
		h := typeName(t, "good-name")
		if h.Error || h.Color != h.Muted {
			t.Errorf("hint of a valid name: error class %v, colour %s; want the hint colour %s", h.Error, h.Color, h.Muted)
		}
		if h.Invalid != "false" || !strings.HasSuffix(h.Link, "/r/good-name") {
			t.Errorf("aria-invalid %q, link %q", h.Invalid, h.Link)
		}
	})
}

// layout is what a test measures of a page.
type layout struct {
	ScrollWidth  float64 `json:"scrollWidth"`
	ScrollHeight float64 `json:"scrollHeight"`
	Width        float64 `json:"width"`  // innerWidth
	Height       float64 `json:"height"` // innerHeight
	Header       struct {
		Height    float64 `json:"height"`    // inside its padding and border
		Tallest   float64 `json:"tallest"`   // the tallest of its visible children
		MaxTop    float64 `json:"maxTop"`    // the lowest top of its visible children
		MinBottom float64 `json:"minBottom"` // the highest bottom of its visible children
		Right     float64 `json:"right"`     // the rightmost edge of its visible children
		Children  int     `json:"children"`
	} `json:"header"`
	// The bottoms of elements that must be on screen, by id (-1: not shown).
	Bottoms map[string]float64 `json:"bottoms"`
	Stage   struct {
		Width  float64 `json:"width"`
		Height float64 `json:"height"`
	} `json:"stage"`
}

// measure measures the page, with the bottoms of the elements of ids.
func measure(t *testing.T, p *page, ids ...string) layout {
	t.Helper()
	l, err := eval[layout](p, `(() => {
		const d = document.documentElement;
		const kids = [...document.querySelector('header.bar').children].filter((e) => e.getClientRects().length > 0);
		const rects = kids.map((e) => e.getBoundingClientRect());
		const stage = document.getElementById('stage');
		const s = stage ? stage.getBoundingClientRect() : { width: 0, height: 0 };
		const bottoms = {};
		for (const id of `+jsString(strings.Join(ids, ","))+`.split(',').filter(Boolean)) {
			const e = document.getElementById(id);
			bottoms[id] = e && e.getClientRects().length ? e.getBoundingClientRect().bottom : -1;
		}
		return {
			scrollWidth: d.scrollWidth, scrollHeight: d.scrollHeight, width: innerWidth, height: innerHeight,
			header: {
				height: (() => { const h = document.querySelector('header.bar'); const cs = getComputedStyle(h);
					return h.getBoundingClientRect().height - ['paddingTop', 'paddingBottom', 'borderTopWidth', 'borderBottomWidth']
						.reduce((sum, p) => sum + parseFloat(cs[p]), 0); })(),
				tallest: Math.max(...rects.map((r) => r.height)),
				maxTop: Math.max(...rects.map((r) => r.top)),
				minBottom: Math.min(...rects.map((r) => r.bottom)),
				right: Math.max(...rects.map((r) => r.right)),
				children: kids.length,
			},
			bottoms, stage: { width: s.width, height: s.height },
		};
	})()`, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// oneRow checks that the header's visible children stand on one row (each
// overlaps every other vertically), that the header is no taller than that
// row (and its padding), and that nothing sticks out to the right.
func (l layout) oneRow(t *testing.T, what string, children int) {
	t.Helper()
	h := l.Header
	if h.Children != children {
		t.Errorf("%s: %d visible items in the header, want %d", what, h.Children, children)
	}
	if h.MaxTop >= h.MinBottom {
		t.Errorf("%s: the header's items are on more than one row (an item's top at %v, another's bottom at %v)", what, h.MaxTop, h.MinBottom)
	}
	if h.Height > h.Tallest+1 {
		t.Errorf("%s: header %v px high inside its padding for items at most %v px high: more than one row", what, h.Height, h.Tallest)
	}
	if h.Right > l.Width {
		t.Errorf("%s: the header's items reach %v px in a %v px wide window", what, h.Right, l.Width)
	}
}

func (l layout) noScroll(t *testing.T, what string, vertical bool) {
	t.Helper()
	if l.ScrollWidth > l.Width {
		t.Errorf("%s: the page is %v px wide in a %v px window (horizontal scrolling)", what, l.ScrollWidth, l.Width)
	}
	if vertical && l.ScrollHeight > l.Height {
		t.Errorf("%s: the page is %v px high in a %v px window (vertical scrolling)", what, l.ScrollHeight, l.Height)
	}
	for id, bottom := range l.Bottoms {
		if bottom < 0 || bottom > l.Height {
			t.Errorf("%s: #%s ends at %v px, outside the %v px high window", what, id, bottom, l.Height)
		}
	}
}

// On a phone 390 px wide the header is one row, with the longest status
// and the longest room name too, and nothing scrolls sideways.
func TestBrowserPhoneHeader(t *testing.T) {
	srv := newTestServer(t)
	base := srv.URL()
	b := newBrowser(t)
	r := randomRoom(t)
	room := r + strings.Repeat("x", 64-len(r)) // the longest room name
	var phone, desk *page

	phase(t, "the landing page", func(t *testing.T) {
		home := b.open(t, "landing", base+"/", phoneViewport)
		l := measure(t, home)
		l.noScroll(t, "landing", false)
		l.oneRow(t, "landing", 1)
	})
	phase(t, "waiting, with the longest room name", func(t *testing.T) {
		phone = b.open(t, "phone", base+"/r/"+room, phoneViewport)
		phone.waitState(t, "waiting", 20*time.Second)
		l := measure(t, phone, "hangup")
		l.noScroll(t, "waiting", false)
		l.oneRow(t, "waiting", 4)
		screenshots(t, phone)
	})
	phase(t, "connected", func(t *testing.T) {
		desk = b.open(t, "desktop", base+"/r/"+room)
		waitConnected(t, 30*time.Second, phone, desk)
		phone.waitVideo(t, 20*time.Second)
		l := measure(t, phone, "hangup")
		l.noScroll(t, "connected", false)
		l.oneRow(t, "connected", 4)
		screenshots(t, phone)
	})
}

// In a laptop's window (1280×800, and the smaller view of that window under
// a browser's toolbars) the call fits without scrolling: the picture, the
// buttons and the chat, with a long chat history; the history stays when
// the other side leaves, with a notice that it left.
func TestBrowserCallFitsWindow(t *testing.T) {
	srv := newTestServer(t)
	base := srv.URL()
	b := newBrowser(t)
	room := randomRoom(t)
	alice := b.open(t, "alice", base+"/r/"+room, chromedp.EmulateViewport(1280, 800))
	alice.waitState(t, "waiting", 20*time.Second)
	bob := b.open(t, "bob", base+"/r/"+room, chromedp.EmulateViewport(1280, 680))
	onScreen := []string{"hangup", "chat-input", "chat-send", "toggle-mic", "transport"}

	phase(t, "waiting for the other", func(t *testing.T) {
		measure(t, alice, onScreen...).noScroll(t, "alice waiting", true)
	})
	phase(t, "connected, with a long chat", func(t *testing.T) {
		waitConnected(t, 30*time.Second, alice, bob)
		alice.waitVideo(t, 20*time.Second)
		bob.waitVideo(t, 20*time.Second)
		for i := range 12 {
			chat(t, bob, alice, fmt.Sprintf("message %d from bob, long enough to take a line or two of the chat", i))
		}
		chat(t, alice, bob, "and one from alice")
		for _, p := range []*page{alice, bob} {
			l := measure(t, p, onScreen...)
			l.noScroll(t, p.name, true)
			if l.Stage.Height < 0.5*l.Height || l.Stage.Width < 0.5*l.Width {
				t.Errorf("%s: the picture takes %v×%v px of a %v×%v window: too small", p.name, l.Stage.Width, l.Stage.Height, l.Width, l.Height)
			}
		}
		screenshots(t, alice, bob)
	})
	phase(t, "bob hangs up: alice keeps the chat, with a notice that he left", func(t *testing.T) {
		if _, err := eval[bool](bob, `(document.getElementById('hangup').click(), true)`, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		alice.waitState(t, "waiting", 15*time.Second)
		alice.waitFor(t, "the notice that bob left", `[...document.querySelectorAll('#chat-log li.event')].some((li) => / left the call/.test(li.textContent))`, 10*time.Second)
		type log struct {
			Lines   []string `json:"lines"`
			Visible bool     `json:"visible"`
		}
		got, err := eval[log](alice, `(() => { const l = document.getElementById('chat-log');
			return { lines: [...l.children].map((li) => li.className + ': ' + li.textContent), visible: l.getClientRects().length > 0 }; })()`, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.Join(got.Lines, "\n")
		for _, want := range []string{"them: message 0 from bob", "them: message 11 from bob", "me: and one from alice", "event: Guest left the call."} {
			if !strings.Contains(text, want) {
				t.Errorf("alice's chat after bob left lacks %q:\n%s", want, text)
			}
		}
		if !got.Visible {
			t.Error("alice's chat log is not shown after bob left")
		}
		measure(t, alice, onScreen...).noScroll(t, "alice after bob left", true)
		screenshots(t, alice)
	})
}
