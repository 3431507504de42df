//go:build browser

// Browser test of batched candidates: the call page's ICE candidates reach
// the server in a handful of POSTs (contract_browser_test.go has the browser,
// the pages and how to run them).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// postCounter forwards every request to the server and counts, for each
// member (by its Authorization header), the message POSTs that the server
// took (201) and the candidates in them.
type postCounter struct {
	h  http.Handler
	mu sync.Mutex
	by map[string]*posted
}

type posted struct {
	posts          int // message POSTs
	candidatePosts int // of them, those that carried candidates
	candidates     int // candidates with a candidate string (not end-of-candidates)
	largest        int // the most messages one POST carried
	mixed          int // POSTs that carried candidates and other messages together
}

type postedMessage struct {
	Type      string  `json:"type"`
	Candidate *string `json:"candidate"`
}

func (c *postCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/messages") {
		c.h.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "400 reading the body", http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	rec := &statusRecorder{ResponseWriter: w}
	c.h.ServeHTTP(rec, r)
	if rec.status != http.StatusCreated {
		return
	}
	var msgs []postedMessage
	if bytes.HasPrefix(bytes.TrimSpace(body), []byte("[")) {
		json.Unmarshal(body, &msgs)
	} else {
		msgs = make([]postedMessage, 1)
		json.Unmarshal(body, &msgs[0])
	}
	candidates, others := 0, 0
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.by[r.Header.Get("Authorization")]
	if p == nil {
		p = &posted{}
		c.by[r.Header.Get("Authorization")] = p
	}
	for _, m := range msgs {
		if m.Type != "candidate" {
			others++
			continue
		}
		candidates++
		if m.Candidate != nil && *m.Candidate != "" {
			p.candidates++
		}
	}
	p.posts++
	p.largest = max(p.largest, len(msgs))
	if candidates > 0 {
		p.candidatePosts++
	}
	if candidates > 0 && others > 0 {
		p.mixed++
	}
}

// of returns what the member with this token posted.
func (c *postCounter) of(token string) posted {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.by["Bearer "+token]; p != nil {
		return *p
	}
	return posted{}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// countAddedCandidates makes the tab count in window.candidatesAdded the
// remote candidates (not end-of-candidates) handed to its peer connections
// (a DevTools script, so the page's CSP does not apply).
var countAddedCandidates = chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
	_, err := cdp.Call(ctx, t, cdppage.AddScriptToEvaluateOnNewDocument, cdppage.AddScriptToEvaluateOnNewDocumentParams{
		Source: `window.candidatesAdded = 0;
		const add = RTCPeerConnection.prototype.addIceCandidate;
		RTCPeerConnection.prototype.addIceCandidate = function (c, ...rest) {
			if (c && c.candidate) window.candidatesAdded++;
			return add.call(this, c, ...rest);
		};`,
	})
	return err
})

// A call's candidates go out in a few batch POSTs rather than one POST
// each, and every one of them reaches the other side's peer connection. The
// server runs its TURN server, so that the pages gather relay candidates too
// (a call of two pages on one machine gathers some 40 then).
func TestBrowserCallBatchedCandidates(t *testing.T) {
	srv := newTestServer(t, withFlags("-turn", "-turn-addr", "127.0.0.1:0", "-turn-public-ip", "127.0.0.1", "-turn-allow-loopback"))
	counter := &postCounter{h: streamingProxy(srv.URL()), by: map[string]*posted{}}
	proxy := httptest.NewServer(counter)
	t.Cleanup(proxy.Close)
	b := newBrowser(t)
	room := randomRoom(t)
	alice := b.open(t, "alice", proxy.URL+"/r/"+room, countAddedCandidates)
	alice.waitState(t, "waiting", 20*time.Second)
	bob := b.open(t, "bob", proxy.URL+"/r/"+room, countAddedCandidates)
	waitConnected(t, 30*time.Second, alice, bob)
	for _, p := range []*page{alice, bob} {
		p.waitFor(t, "the end of candidate gathering", `[...window.tincanDebug.peers.values()][0].pc.iceGatheringState === 'complete'`, 20*time.Second)
	}
	var call posted // both sides
	for _, pair := range [][2]*page{{alice, bob}, {bob, alice}} {
		from, to := pair[0], pair[1]
		// Gathering is complete, so every candidate has been sent; a message
		// other than a candidate is posted only after all of them (the page
		// ignores its type).
		if _, err := eval[bool](from, `window.tincanDebug.client.send({ type: 'test-flush' }).then(() => true)`, 20*time.Second); err != nil {
			t.Fatalf("%s: a message after the candidates: %v", from.name, err)
		}
		sent := counter.of(from.str(`window.tincanDebug.client.token`))
		to.waitFor(t, fmt.Sprintf("the %d candidates %s posted", sent.candidates, from.name),
			fmt.Sprintf(`window.candidatesAdded >= %d`, sent.candidates), 10*time.Second)
		if added := to.str(`window.candidatesAdded`); added != fmt.Sprint(sent.candidates) {
			t.Errorf("%s posted %d candidates, %s's peer connection got %s", from.name, sent.candidates, to.name, added)
		}
		if sent.mixed > 0 {
			t.Errorf("%s: %d POSTs carried candidates together with other messages", from.name, sent.mixed)
		}
		t.Logf("%s: %d candidates in %d POSTs (at most %d messages in one); %d message POSTs in all",
			from.name, sent.candidates, sent.candidatePosts, sent.largest, sent.posts)
		call.candidates += sent.candidates
		call.candidatePosts += sent.candidatePosts
		call.largest = max(call.largest, sent.largest)
	}
	// How many candidates a call gathers depends on the machine's
	// interfaces and on which TURN allocations finish in time (between 16
	// and some 40 here); a handful is enough to tell batches from one POST
	// per candidate.
	if call.candidates < 8 {
		t.Fatalf("the call gathered only %d candidates: too few to show batching", call.candidates)
	}
	if call.largest < 2 || call.candidatePosts*3 > call.candidates {
		t.Errorf("the call's %d candidates took %d POSTs (at most %d in one), want a handful of batches",
			call.candidates, call.candidatePosts, call.largest)
	}
}
