package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tincan/tincan/client"
	"github.com/tincan/tincan/internal/tincantest"
)

// TestCrashRecovery builds the real binary, loads it with posts from several
// goroutines, kills it with SIGKILL mid-stream and restarts it on the same
// bbolt file, three times over. Every message whose POST got 201 must then be
// delivered exactly once, in id order, both through SSE resume
// (Last-Event-ID) and through a long-poll walk from since=0; tokens and
// memberships survive; ids never repeat. The room holds three members: S
// sends, R1 reads its SSE stream during each load and resumes it after each
// restart, R2 reads nothing until the end (a long-poll acknowledges its
// since, so a walk from 0 needs a reader that never polled).
//
// The posts that were in flight at a kill are retried after the restart
// with their Idempotency-Key, as a client would: a message stored before the
// kill must keep its id, one that was not gets a new one, and either way it
// is delivered once. Every fourth post is a batch of three messages under
// one Idempotency-Key: all three are stored or none, and a retry keeps
// their ids.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the crash test (it builds the binary and kills it)")
	}
	const (
		crashes = 3
		posters = 4
		killAt  = 300 // 201s before each kill
		room    = "crash"
	)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: posters}, Timeout: 30 * time.Second}
	srv, ep := startServer(t, hc, nil, "-room-capacity", "3")
	r1 := ep.join(t, room)
	r2 := ep.join(t, room)
	s := ep.join(t, room) // one try a post: a post without an answer is in flight
	members := []*client.Member{r1, r2, s}

	var (
		acked    = map[string]uint64{} // idempotency key -> id of its 201
		seen1    = map[string]uint64{} // key -> id, as R1 received it
		got1     []map[string]any      // what R1 received, over all its streams
		last1    uint64                // the last id R1 received
		idBefore uint64                // the highest id known to be handed out before the last kill
		inflight []string              // keys whose POST got no answer before the last kill
	)
	// restart starts the server again on the same file (on a new port,
	// which the members follow), checks that they resume, and retries what
	// was in flight.
	restart := func(t *testing.T) {
		began := time.Now()
		srv.Restart(t)
		t.Logf("restarted in %v", time.Since(began).Round(time.Millisecond))
		checkResume(t, ep, members)
		stored := 0
		for _, key := range inflight {
			ids, err := postLoad(s, key)
			if err != nil {
				t.Fatalf("retry of %s after the restart: %v", key, err)
			}
			for k, id := range ids {
				if want, ok := seen1[k]; ok && id != want {
					t.Fatalf("retry of %s answered id %d, but the message was delivered before the crash as %d", k, id, want)
				}
				if id <= idBefore {
					stored++
				}
				acked[k] = id
			}
		}
		t.Logf("%d messages of the %d posts in flight at the kill had been stored", stored, len(inflight))
		inflight = nil
		// A retry of an acknowledged post still answers its id.
		var lastKey string
		for k, id := range acked {
			if id > acked[lastKey] {
				lastKey = k
			}
		}
		if ids, err := postLoad(s, idemKeyOf(lastKey)); err != nil || ids[lastKey] != acked[lastKey] {
			t.Fatalf("retry of the acknowledged %s (id %d) after the restart: %v, ids %v", lastKey, acked[lastKey], err, ids)
		}
	}

	for crash := 1; crash <= crashes; crash++ {
		if crash > 1 {
			phase(t, fmt.Sprintf("restart %d: the members resume, and the posts in flight keep or get an id", crash-1), restart)
		}
		phase(t, fmt.Sprintf("kill %d under load: new ids above the old, R1's stream in order up to the kill", crash), func(t *testing.T) {
			// R1 (re)opens its stream before the load and reads it all
			// along (into a buffer big enough that it never stalls).
			// Raw frames: the test checks where each stream begins.
			stream1 := ep.events(t, r1, last1)

			l := loadUntilKill(t, srv, s, fmt.Sprintf("c%d", crash), posters, killAt)
			before := idBefore
			for k, id := range l.acked {
				if id <= before {
					t.Fatalf("after restart %d, %s got id %d, not above %d from before", crash-1, k, id, before)
				}
				acked[k] = id
				idBefore = max(idBefore, id)
			}
			inflight = l.inflight
			t.Logf("kill %d: after %d posts answered 201 in %v; %d in flight", crash, len(l.acked), l.took.Round(time.Millisecond), len(inflight))

			frames := stream1.rest(t)
			if len(frames) == 0 || frames[0].Event != "ready" || frames[0].ID != strconv.FormatUint(last1, 10) {
				t.Fatalf("R1's stream did not start with a ready frame at %d: %+v", last1, frames[:min(1, len(frames))])
			}
			for _, f := range frames[1:] {
				m, err := frameMessage(f)
				if err != nil {
					t.Fatal(err)
				}
				if id := idOf(m); id <= last1 {
					t.Fatalf("R1's stream delivered id %d after %d", id, last1)
				}
				last1 = idOf(m)
				got1 = append(got1, m)
				if k, ok := m["k"].(string); ok {
					seen1[k] = last1
				}
			}
			idBefore = max(idBefore, last1)
			t.Logf("R1 received %d messages in that stream, up to id %d", len(frames)-1, last1)
		})
	}

	phase(t, fmt.Sprintf("restart %d: the members resume, and the posts in flight keep or get an id", crashes), restart)
	var end uint64 // the id of the end message
	phase(t, "ids after the crashes are new, and no id was answered twice", func(t *testing.T) {
		// New ids are above every id handed out before the crash.
		var err error
		if end, err = s.Send(context.Background(), map[string]string{"type": "end"}, nil); err != nil {
			t.Fatalf("the end message: %v", err)
		}
		if end <= idBefore {
			t.Fatalf("a post after the restart got id %d, not above %d from before the crash", end, idBefore)
		}
		uniqueIDs(t, acked, end)
	})
	phase(t, "R1, resuming its stream with Last-Event-ID, got every acknowledged message once", func(t *testing.T) {
		stream1 := ep.events(t, r1, last1)
		if got := stream1.ready(t); got != last1 {
			t.Fatalf("R1's resumed stream starts at %d, want %d", got, last1)
		}
		for after := last1; ; {
			m := stream1.message(t)
			if idOf(m) <= after {
				t.Fatalf("R1's resumed stream delivered id %d after %d", idOf(m), after)
			}
			after = idOf(m)
			got1 = append(got1, m)
			if m["type"] == "end" {
				break
			}
		}
		stream1.close()
		checkExactlyOnce(t, "R1 (SSE, resumed with Last-Event-ID)", got1, s.ClientID, acked, end)
	})
	phase(t, "R2, walking the long-poll from since=0, gets every acknowledged message once", func(t *testing.T) {
		var got2 []map[string]any
		for since := uint64(0); len(got2) == 0 || got2[len(got2)-1]["type"] != "end"; {
			p := ep.poll(t, r2, since, "10")
			for _, m := range p.Messages {
				if idOf(m) <= since {
					t.Fatalf("poll since %d delivered id %d", since, idOf(m))
				}
				since = idOf(m)
				got2 = append(got2, m)
			}
			if len(p.Messages) == 0 || p.Next != since {
				t.Fatalf("poll answered %d messages, next %d, after id %d", len(p.Messages), p.Next, since)
			}
		}
		checkExactlyOnce(t, "R2 (long-poll from 0)", got2, s.ClientID, acked, end)
		t.Logf("each receiver got all %d acknowledged messages exactly once", len(acked))
	})
	phase(t, "SIGTERM: the server exits with status 0", func(t *testing.T) {
		srv.Terminate(t, 10*time.Second)
	})
}

// checkResume: after a restart, each member's token resumes it (200, same
// id, the others as peers in join order) and the room is full.
func checkResume(t *testing.T, ep endpoint, members []*client.Member) {
	t.Helper()
	for i, c := range members {
		r := ep.rejoin(t, c)
		others := []string{}
		for j, o := range members {
			if j != i {
				others = append(others, o.ClientID)
			}
		}
		if r.ClientID != c.ClientID || r.Token != c.Token || !r.Initiator || !slices.Equal(r.Peers, others) || r.Capacity != len(members) {
			t.Fatalf("resume of member %d after the restart: %+v, want client %s with peers %v", i, r, c.ClientID, others)
		}
	}
	if info := ep.roomInfo(t, members[0].Room); info.Occupants != len(members) || info.Capacity != len(members) {
		t.Fatalf("room after the restart: %+v", info)
	}
}

type load struct {
	acked    map[string]uint64 // message k -> id of its 201
	inflight []string          // keys whose POST got no answer
	took     time.Duration
}

// loadUntilKill posts from s in several goroutines, each post (one message,
// or every fourth a batch of three) with its own Idempotency-Key, and kills srv with SIGKILL once killAt posts were
// answered 201, while posts are in flight.
func loadUntilKill(t *testing.T, srv *tincantest.Server, s *client.Member, prefix string, posters, killAt int) load {
	t.Helper()
	var (
		mu      sync.Mutex
		l       = load{acked: map[string]uint64{}}
		bad     []string // unexpected answers
		n       atomic.Int64
		reached = make(chan struct{})
		stopped = make(chan struct{})
		wg      sync.WaitGroup
	)
	began := time.Now()
	for g := range posters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var prev uint64
			for i := 0; ; i++ {
				key := fmt.Sprintf("%s-g%d-%d", prefix, g, i)
				if i%4 == 3 {
					key += "b" // a batch of three
				}
				ids, err := postLoad(s, key)
				first, last := uint64(1<<63), uint64(0)
				for _, id := range ids {
					first, last = min(first, id), max(last, id)
				}
				mu.Lock()
				switch {
				case noAnswer(err):
					l.inflight = append(l.inflight, key)
				case err != nil:
					bad = append(bad, fmt.Sprintf("%s: %v", key, err))
				case first <= prev:
					bad = append(bad, fmt.Sprintf("%s: id %d after %d of the same poster", key, first, prev))
				default:
					maps.Copy(l.acked, ids)
					prev = last
				}
				mu.Unlock()
				if err != nil {
					return
				}
				if n.Add(1) == int64(killAt) {
					close(reached)
				}
			}
		}()
	}
	go func() { wg.Wait(); close(stopped) }()
	select {
	case <-reached:
	case <-stopped: // every poster met an error
	case <-time.After(60 * time.Second):
	}
	srv.Kill(t) // SIGKILL, posts in flight
	wg.Wait()
	l.took = time.Since(began)
	if len(bad) > 0 {
		t.Fatalf("unexpected answers before the kill: %v", bad)
	}
	if len(l.acked) < killAt {
		t.Fatalf("only %d posts answered 201 within 60s", len(l.acked))
	}
	return l
}

// postLoad posts the load of Idempotency-Key key from c, once (c's
// client does not retry): one message, or, for a key that ends in "b", a
// batch of three. Each message carries its own "k": the key, or the key and
// "#0", "#1", "#2". A 429 is no answer: it retries the same key after 50ms.
// ids maps each message's k to its id.
func postLoad(c *client.Member, key string) (ids map[string]uint64, err error) {
	pad := strings.Repeat("x", 200)
	ks := []string{key}
	if strings.HasSuffix(key, "b") {
		ks = []string{key + "#0", key + "#1", key + "#2"}
	}
	var msgs []any
	for _, k := range ks {
		msgs = append(msgs, map[string]string{"type": "load", "k": k, "pad": pad})
	}
	var got []uint64
	for range 100 {
		if len(ks) == 1 {
			var id uint64
			id, err = c.Send(context.Background(), msgs[0], &client.SendOptions{IdempotencyKey: key})
			got = []uint64{id}
		} else {
			got, err = c.SendBatch(context.Background(), msgs, &client.SendOptions{IdempotencyKey: key})
		}
		var e *client.Error
		if !errors.As(err, &e) || e.Status != http.StatusTooManyRequests {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	ids = map[string]uint64{}
	for i, k := range ks {
		ids[k] = got[i]
	}
	return ids, nil
}

// noAnswer says that a post got no answer (the connection failed): the
// message may or may not have been stored.
func noAnswer(err error) bool {
	var e *client.Error
	return err != nil && !errors.As(err, &e)
}

// idemKeyOf is the Idempotency-Key of the post that carried the load
// message k.
func idemKeyOf(k string) string {
	key, _, _ := strings.Cut(k, "#")
	return key
}
