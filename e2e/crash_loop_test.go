package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tincan/tincan/client"
)

// TestCrashLoop kills the real binary with SIGKILL 20 times at random
// moments while three posters load a room (each post with an
// Idempotency-Key, retried with the same key until answered 201, as a
// client would) and two members receive: one over SSE, resuming with
// Last-Event-ID after each crash, one by long-poll. Some more kills land
// while the server is starting. After every restart the db must reopen with
// the room intact; at the end both receivers must have had every
// acknowledged message exactly once, in id order, with the id its POST was
// answered, and no id may have been answered twice.
func TestCrashLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the crash loop builds the binary and kills it 20 times")
	}
	const (
		kills   = 20
		posters = 3
		room    = "loop"
	)
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, seed>>32))
	t.Logf("random seed %d", seed)

	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	// The members' requests follow the server to each new port. The
	// sender's client retries a post with its Idempotency-Key until it is
	// answered 201 (pausing from 10 ms on), the receivers' resume by
	// themselves.
	srv, ep := startServer(t, hc, nil, "-room-capacity", "3")
	sender := ep.join(t, room, client.WithRetries(1<<30, 10*time.Millisecond))
	sseR := ep.join(t, room, client.WithRetries(1, 20*time.Millisecond))
	pollR := ep.join(t, room, client.WithRetries(1, 20*time.Millisecond))

	var (
		mu    sync.Mutex
		acked = map[string]uint64{} // idempotency key -> id of its 201
		bad   []string
		nAck  atomic.Int64
	)
	problem := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(bad) < 20 {
			bad = append(bad, fmt.Sprintf(format, args...))
		}
	}
	problems := func() string {
		mu.Lock()
		defer mu.Unlock()
		return strings.Join(bad, "\n")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// The posters: a key is retried until it is answered 201.
	var stopPosting atomic.Bool
	var posting sync.WaitGroup
	for g := range posters {
		posting.Add(1)
		go func() {
			defer posting.Done()
			var prev uint64
			for i := 0; !stopPosting.Load(); i++ {
				key := fmt.Sprintf("p%d-%d", g, i)
				id, err := sender.Send(ctx, map[string]string{"type": "load", "k": key}, &client.SendOptions{IdempotencyKey: key})
				if err != nil {
					problem("%s: %v", key, err)
					return
				}
				if id <= prev {
					problem("%s: id %d after %d of the same poster", key, id, prev)
				}
				prev = id
				mu.Lock()
				acked[key] = id
				mu.Unlock()
				nAck.Add(1)
			}
		}()
	}

	// The receivers, until they see the end message.
	var receiving sync.WaitGroup
	var gotSSE, gotPoll []map[string]any
	var sseStreams, pollLoops atomic.Int64
	receiving.Go(func() { gotSSE = receiveUntilEnd(ctx, sseR, client.EventStream, 0, &sseStreams, problem) })
	receiving.Go(func() { gotPoll = receiveUntilEnd(ctx, pollR, client.LongPoll, 0, &pollLoops, problem) })

	// The kills.
	began := time.Now()
	startupKills := 0
	for k := range kills {
		phase(t, fmt.Sprintf("kill %d under load: the db reopens with the room intact", k+1), func(t *testing.T) {
			// Under load: wait for a few acknowledgements from this
			// server, then a random moment.
			for n := nAck.Load(); nAck.Load() < n+3; {
				if time.Since(began) > 60*time.Second {
					t.Fatalf("kill %d: no progress (problems: %v)", k+1, problems())
				}
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(time.Duration(rng.Int64N(int64(300 * time.Millisecond))))
			srv.Kill(t)
			if rng.IntN(4) == 0 { // and now and then once more while it starts
				p := srv.Spawn(t)
				time.Sleep(time.Duration(rng.Int64N(int64(40 * time.Millisecond))))
				p.Kill(t)
				startupKills++
			}
			srv.Restart(t)
			if info := ep.roomInfo(t, room); info.Occupants != 3 {
				t.Fatalf("after kill %d the room has %d occupants, want 3", k+1, info.Occupants)
			}
		})
	}
	loop := time.Since(began)

	var end uint64 // the id of the end message
	phase(t, "the posters and the receivers finish without a problem", func(t *testing.T) {
		// Let the posters finish what they have in flight, then end.
		stopPosting.Store(true)
		posting.Wait()
		var err error
		if end, err = sender.Send(ctx, map[string]string{"type": "end"}, &client.SendOptions{IdempotencyKey: "end"}); err != nil {
			t.Fatalf("the end message: %v", err)
		}
		receiving.Wait()
		if p := problems(); p != "" {
			t.Fatalf("problems during the crash loop:\n%s", p)
		}
		t.Logf("%d SIGKILLs under load (+%d during start) in %v; %d messages acknowledged; the SSE receiver reconnected %d times, the long-poll receiver %d times",
			kills, startupKills, loop.Round(time.Millisecond), len(acked), sseStreams.Load()-1, pollLoops.Load()-1)
	})
	phase(t, "no id was answered twice", func(t *testing.T) {
		uniqueIDs(t, acked, end)
	})
	phase(t, "the SSE receiver got every acknowledged message once, in id order", func(t *testing.T) {
		checkExactlyOnce(t, "the SSE receiver", gotSSE, sender.ClientID, acked, end)
	})
	phase(t, "the long-poll receiver got every acknowledged message once, in id order", func(t *testing.T) {
		checkExactlyOnce(t, "the long-poll receiver", gotPoll, sender.ClientID, acked, end)
	})
	phase(t, "SIGTERM: the server exits with status 0", func(t *testing.T) {
		srv.Terminate(t, 10*time.Second)
	})
}
