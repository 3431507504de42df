//go:build browser

// Browser tests of the page's layout and messages: what a person sees on a
// phone and in a laptop's window, measured in Chromium (contract_browser_test.go
// has the browser, the pages and how to run them).
package main

import (
	"strings"
	"testing"
	"time"
)

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
