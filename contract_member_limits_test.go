package main

// The limits of people behind one address. An office behind one NAT or
// corporate proxy shares one address: with the default limits 1,000 of its
// members hold a call each, since what a member does with its token counts
// against that member, while what nobody's token covers (joins, room info,
// unknown tokens) still counts against the address. One member holds only
// a few streams and polls at once, and its own bucket of calls.

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// limitDefaults are the flags of the limits at their defaults, which the
// harness turns off: a test server started with them limits as a
// production one does.
func limitDefaults(t *testing.T) []string {
	t.Helper()
	d, err := parseFlags([]string{"tincan"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return []string{
		"-rate-limit", fmt.Sprint(d.rateLimit), "-rate-burst", fmt.Sprint(d.rateBurst),
		"-member-rate-limit", fmt.Sprint(d.memberRateLimit), "-member-rate-burst", fmt.Sprint(d.memberRateBurst),
		"-max-streams-per-member", fmt.Sprint(d.maxOpenPerMember), "-max-streams-per-ip", fmt.Sprint(d.maxOpenPerIP),
	}
}

// inParallel runs f(i) for i in [0, n) on a few goroutines and returns the
// first error.
func inParallel(n int, f func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	next := make(chan int)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

func TestThousandMembersBehindOneAddress(t *testing.T) {
	const members = 1000
	d, err := parseFlags([]string{"tincan"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if d.maxOpenPerIP != 0 && d.maxOpenPerIP < members {
		t.Fatalf("-max-streams-per-ip defaults to %d: fewer than %d members behind one address can hold a stream", d.maxOpenPerIP, members)
	}
	// The defaults, but joins: the address's bucket takes exactly the
	// 1,000 joins at once and refills at one call in 1,000 s, so that the
	// limit's bite is seen at once, however long the joins take.
	srv := newTestServer(t, withFlags(append(limitDefaults(t), "-heartbeat", "1h", "-rate-limit", "0.001", "-rate-burst", strconv.Itoa(members))...))
	clients := make([]*client, members)
	streams := make([]*stream, members)
	t.Cleanup(func() {
		for _, s := range streams {
			if s != nil {
				s.close()
			}
		}
	})

	phase(t, "1,000 members join from one address", func(t *testing.T) {
		err := inParallel(members, func(i int) error {
			room := fmt.Sprintf("office-%d", i/2)
			a, err := srv.request(context.Background(), "POST", "/rooms/"+room+"/join", "")
			if err != nil || a.Status != 201 {
				return fmt.Errorf("join %d: %v %d %s", i, err, a.Status, a.Body)
			}
			c := &client{ep: srv.endpoint, Room: room}
			if err := jsonNumbers(a.Body, &c.joinAnswer); err != nil {
				return err
			}
			clients[i] = c
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	phase(t, "the address's joins and room info are limited", func(t *testing.T) {
		for _, tc := range []struct{ method, path string }{
			{"POST", "/rooms/one-more/join"},
			{"GET", "/rooms/office-0"},
			{"GET", "/rooms/office-0/messages?token=guessed"}, // an unknown token is the address's
		} {
			a := srv.do(t, tc.method, tc.path, "")
			if a.Status != 429 || a.problem(t) != "rate_limited" || a.Header.Get("Retry-After") == "" {
				t.Fatalf("%s %s after 1,000 joins: %d %s; want 429 rate_limited with Retry-After", tc.method, tc.path, a.Status, a.Body)
			}
		}
		if info, err := srv.request(context.Background(), "GET", "/healthz", ""); err != nil || info.Status != 200 {
			t.Fatalf("healthz is not limited: %v %d", err, info.Status)
		}
	})
	phase(t, "every member holds an event stream", func(t *testing.T) {
		err := inParallel(members, func(i int) error {
			s, err := clients[i].openEvents(context.Background(), 8, "")
			if err != nil {
				return fmt.Errorf("stream %d: %v", i, err)
			}
			streams[i] = s
			if f, ok := s.nextWithin(30 * time.Second); !ok || f.Event != "ready" {
				return fmt.Errorf("stream %d: first frame %+v", i, f)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n := srv.metric(t, "tincan_streams_open"); n != members {
			t.Fatalf("tincan_streams_open %v, want %d", n, members)
		}
	})
	phase(t, "every member calls its peer, and is heard", func(t *testing.T) {
		err := inParallel(members, func(i int) error {
			a, err := clients[i].tryPost(context.Background(), fmt.Sprintf(`{"type":"chat","n":%d}`, i))
			if err != nil || a.Status != 201 {
				return fmt.Errorf("post %d: %v %d %s", i, err, a.Status, a.Body)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		err = inParallel(members, func(i int) error {
			peer := i ^ 1 // the other member of the room
			// The first of a room reads its peer's peer-joined first.
			for {
				f, ok := streams[i].nextWithin(30 * time.Second)
				if !ok {
					return fmt.Errorf("stream %d: no message from %d", i, peer)
				}
				m, err := frameMessage(f)
				if err != nil {
					return err
				}
				if m["type"] == "chat" {
					if fmt.Sprint(m["n"]) != strconv.Itoa(peer) || m["from"] != clients[peer].ClientID {
						return fmt.Errorf("stream %d: got %v, want %d's message", i, m, peer)
					}
					return nil
				}
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	phase(t, "one member holds only a few streams and polls", func(t *testing.T) {
		c := clients[0]
		for n := 1; n < d.maxOpenPerMember; n++ { // the first is open
			s, err := c.openEvents(context.Background(), 8, "")
			if err != nil {
				t.Fatalf("stream %d of one member: %v", n+1, err)
			}
			t.Cleanup(s.close)
		}
		for _, path := range []string{"/rooms/" + c.Room + "/events?token=" + c.Token, "/rooms/" + c.Room + "/messages?wait=0&token=" + c.Token} {
			a := srv.do(t, "GET", path, "")
			if a.Status != 429 || a.problem(t) != "rate_limited" || !strings.Contains(string(a.Body), "this member") {
				t.Fatalf("listener %d of one member: %d %s; want 429 rate_limited for the member", d.maxOpenPerMember+1, a.Status, a.Body)
			}
		}
		// Its peer, behind the same address, is not held back.
		if a := srv.do(t, "GET", "/rooms/"+c.Room+"/messages?wait=0&token="+clients[1].Token, ""); a.Status != 200 {
			t.Fatalf("the peer's poll: %d %s", a.Status, a.Body)
		}
	})
	phase(t, "one member's burst of calls does not hold back the others", func(t *testing.T) {
		// Three bursts' worth at once, of a call that reads no disk: the
		// bucket refills at -member-rate-limit, far slower than they come.
		c := clients[2]
		calls := 3 * d.memberRateBurst
		var limited atomic.Int64
		var retryAfter atomic.Value
		err := inParallel(calls, func(int) error {
			a, err := srv.request(context.Background(), "GET", "/ice-servers", "", c.auth()...)
			switch {
			case err != nil:
				return err
			case a.Status == 429 && strings.Contains(string(a.Body), `"code":"rate_limited"`):
				limited.Add(1)
				retryAfter.Store(a.Header.Get("Retry-After"))
			case a.Status != 200:
				return fmt.Errorf("GET /ice-servers: %d %s", a.Status, a.Body)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if limited.Load() == 0 {
			t.Fatalf("%d calls at once from one member were not limited", calls)
		}
		if ra, _ := retryAfter.Load().(string); ra == "" {
			t.Fatal("the member's 429 has no Retry-After")
		}
		for _, other := range []*client{clients[3], clients[members-1]} {
			if a, err := other.tryPost(context.Background(), `{"type":"chat"}`); err != nil || a.Status != 201 {
				t.Fatalf("another member's post: %v %d %s", err, a.Status, a.Body)
			}
		}
	})
}
