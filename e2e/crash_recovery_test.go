package main

import (
	"context"
	"encoding/json"
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
	srv := startBinServer(t, buildTincan(t), withClient(hc), withFlags("-room-capacity", "3"))
	r1 := srv.join(t, room, 201)
	r2 := srv.join(t, room, 201)
	s := srv.join(t, room, 201)
	members := []*client{r1, r2, s}

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
		srv.restart(t)
		t.Logf("restarted in %v", time.Since(began).Round(time.Millisecond))
		checkResume(t, members)
		stored := 0
		for _, key := range inflight {
			ids, a, err := postLoad(s, key)
			if err != nil || a.Status != 201 {
				t.Fatalf("retry of %s after the restart: %v %d %s", key, err, a.Status, a.Body)
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
		if ids, a, err := postLoad(s, idemKeyOf(lastKey)); err != nil || a.Status != 201 || ids[lastKey] != acked[lastKey] {
			t.Fatalf("retry of the acknowledged %s (id %d) after the restart: %v %d %s", lastKey, acked[lastKey], err, a.Status, a.Body)
		}
	}

	for crash := 1; crash <= crashes; crash++ {
		if crash > 1 {
			phase(t, fmt.Sprintf("restart %d: the members resume, and the posts in flight keep or get an id", crash-1), restart)
		}
		phase(t, fmt.Sprintf("kill %d under load: new ids above the old, R1's stream in order up to the kill", crash), func(t *testing.T) {
			// R1 (re)opens its stream before the load and reads it all
			// along (into a buffer big enough that it never stalls).
			var header []string
			if last1 > 0 {
				header = []string{"Last-Event-ID", strconv.FormatUint(last1, 10)}
			}
			stream1, err := r1.openEvents(context.Background(), 1<<16, "", header...)
			if err != nil {
				t.Fatalf("R1's stream: %v", err)
			}
			t.Cleanup(stream1.close)

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

			frames := stream1.drain(t)
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
		end = s.post(t, `{"type":"end"}`)
		if end <= idBefore {
			t.Fatalf("a post after the restart got id %d, not above %d from before the crash", end, idBefore)
		}
		byID := map[uint64]string{}
		for k, id := range acked {
			if other, dup := byID[id]; dup {
				t.Fatalf("id %d was answered for both %s and %s", id, other, k)
			}
			byID[id] = k
		}
	})
	phase(t, "R1, resuming its stream with Last-Event-ID, got every acknowledged message once", func(t *testing.T) {
		stream1, err := r1.openEvents(context.Background(), 1<<16, "", "Last-Event-ID", strconv.FormatUint(last1, 10))
		if err != nil {
			t.Fatalf("R1's resumed stream: %v", err)
		}
		t.Cleanup(stream1.close)
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
			p := r2.poll(t, since, "10")
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
		srv.terminate(t, 10*time.Second)
	})
}

// checkResume: after a restart, each member's token resumes it (200, same
// id, the others as peers in join order) and the room is full.
func checkResume(t *testing.T, members []*client) {
	t.Helper()
	for i, c := range members {
		r := c.resume(t)
		others := []string{}
		for j, o := range members {
			if j != i {
				others = append(others, o.ClientID)
			}
		}
		if r.ClientID != c.ClientID || r.Token != c.Token || !r.Initiator || !slices.Equal(r.Peers, others) || r.Capacity != len(members) {
			t.Fatalf("resume of member %d after the restart: %+v, want client %s with peers %v", i, r.joinAnswer, c.ClientID, others)
		}
	}
	if info := members[0].ep.roomInfo(t, members[0].Room); info.Occupants != len(members) || info.Capacity != len(members) {
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
func loadUntilKill(t *testing.T, srv *binServer, s *client, prefix string, posters, killAt int) load {
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
				ids, a, err := postLoad(s, key)
				first, last := uint64(1<<63), uint64(0)
				for _, id := range ids {
					first, last = min(first, id), max(last, id)
				}
				mu.Lock()
				switch {
				case err != nil:
					l.inflight = append(l.inflight, key)
				case a.Status != 201:
					bad = append(bad, fmt.Sprintf("%s: %d %s", key, a.Status, a.Body))
				case first <= prev:
					bad = append(bad, fmt.Sprintf("%s: id %d after %d of the same poster", key, first, prev))
				default:
					maps.Copy(l.acked, ids)
					prev = last
				}
				mu.Unlock()
				if err != nil || a.Status != 201 {
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
	srv.kill(t) // SIGKILL, posts in flight
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

// postLoad posts the load of Idempotency-Key key from c (see tryPost):
// one message, or, for a key that ends in "b", a batch of three. Each
// message carries its own "k": the key, or the key and "#0", "#1", "#2".
// A 429 rate_limited is no answer: it retries the same key after 50ms.
// ids maps each message's k to its id, from a 201; a 201 without them is
// an error.
func postLoad(c *client, key string) (ids map[string]uint64, a answer, err error) {
	pad := strings.Repeat("x", 200)
	msg := fmt.Sprintf(`{"type":"load","k":%q,"pad":%q}`, key, pad)
	var ks []string
	if strings.HasSuffix(key, "b") {
		var els []string
		for i := range 3 {
			ks = append(ks, fmt.Sprintf("%s#%d", key, i))
			els = append(els, fmt.Sprintf(`{"type":"load","k":%q,"pad":%q}`, ks[i], pad))
		}
		msg = "[" + strings.Join(els, ",") + "]"
	}
	for range 100 {
		a, err = c.tryPost(context.Background(), msg, "Idempotency-Key", key)
		if err != nil || a.Status != http.StatusTooManyRequests {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil || a.Status != 201 {
		return nil, a, err
	}
	if ks == nil {
		id, err := a.postedID()
		return map[string]uint64{key: id}, a, err
	}
	var ans struct{ IDs []uint64 }
	if err := json.Unmarshal(a.Body, &ans); err != nil || len(ans.IDs) != len(ks) {
		return nil, a, fmt.Errorf("batch answer %s: %v", a.Body, err)
	}
	ids = map[string]uint64{}
	for i, k := range ks {
		ids[k] = ans.IDs[i]
	}
	return ids, a, nil
}

// idemKeyOf is the Idempotency-Key of the post that carried the load
// message k.
func idemKeyOf(k string) string {
	key, _, _ := strings.Cut(k, "#")
	return key
}
