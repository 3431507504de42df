package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/tincan/tincan/client"
	"github.com/tincan/tincan/store/etcdstore/etcdtest"
)

// TestClusterExactlyOnce runs three real tincan binaries on one three-member
// etcd cluster, behind a round-robin balancer, and loads one room through
// it: three posters (one member; every post with its own Idempotency-Key,
// retried with that key on a connection error or a 503 until it is
// answered 201, as a client would), two SSE readers resuming with
// Last-Event-ID and two long-poll readers, all reconnecting through the
// balancer, so that every request may land on another instance. Meanwhile
// one tincan instance is killed with SIGKILL and restarted, and later the
// etcd leader is stopped hard and restarted. In the end each reader must
// have had every acknowledged message exactly once, in id order, with the
// id its POST was answered; no id may have been answered twice.
func TestClusterExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the cluster test builds the binary and runs three of it on etcd")
	}
	const (
		posters = 3
		step    = 150 // acknowledged posts between two events of the run
		room    = "cluster"
	)
	etcd := etcdtest.Start(t, etcdtest.Config{Members: 3, CompactEvery: 2 * time.Second})
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 30 * time.Second}
	readHC := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}} // streams last
	t.Cleanup(readHC.CloseIdleConnections)
	c := startTincanCluster(t, etcd, 3, hc, "-room-capacity", "5")
	var retried retries
	sender := poster(t, c.proxy, room, &retried)
	readers := newEndpoint(t, c.proxy.url, readHC)
	var sseR, pollR []*client.Member
	for range 2 {
		sseR = append(sseR, readers.join(t, room, client.WithRetries(1, 20*time.Millisecond)))
	}
	for range 2 {
		pollR = append(pollR, readers.join(t, room, client.WithRetries(1, 20*time.Millisecond)))
	}

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
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// The posters: a key is retried until it is answered 201.
	var stopPosting atomic.Bool
	var posting sync.WaitGroup
	for g := range posters {
		posting.Go(func() {
			var prev uint64
			for i := 0; !stopPosting.Load(); i++ {
				key := fmt.Sprintf("p%d-%d", g, i)
				id, err := sendRetrying(ctx, sender, key, map[string]string{"type": "load", "k": key}, &retried)
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
		})
	}

	// The readers, until they see the end message.
	var receiving sync.WaitGroup
	gotSSE := make([][]map[string]any, len(sseR))
	gotPoll := make([][]map[string]any, len(pollR))
	var sseStreams, pollLoops atomic.Int64
	for i, r := range sseR {
		receiving.Go(func() { gotSSE[i] = receiveUntilEnd(ctx, r, client.EventStream, 0, &sseStreams, problem) })
	}
	for i, r := range pollR {
		receiving.Go(func() { gotPoll[i] = receiveUntilEnd(ctx, r, client.LongPoll, 0, &pollLoops, problem) })
	}

	// progress waits for n more acknowledgements.
	progress := func(t *testing.T, n int64) {
		t.Helper()
		began := time.Now()
		for target := nAck.Load() + n; nAck.Load() < target; time.Sleep(5 * time.Millisecond) {
			if p := problems(); p != "" {
				t.Fatalf("problems:\n%s", p)
			}
			if time.Since(began) > time.Minute {
				t.Fatalf("fewer than %d acknowledgements in a minute", n)
			}
		}
		t.Logf("%d posts acknowledged in %v", n, time.Since(began).Round(time.Millisecond))
	}
	began := time.Now()
	phase(t, "the load runs through the balancer on three instances", func(t *testing.T) { progress(t, step) })
	victim := 0 // the instance killed
	phase(t, "an instance serving event streams killed with SIGKILL: they resume on the others, the load goes on", func(t *testing.T) {
		var streams int64
		victim, streams = c.balancer.busiest()
		if streams == 0 {
			t.Fatal("no event stream open through the balancer")
		}
		opened := sseStreams.Load()
		c.instances[victim].Kill(t)
		t.Logf("killed instance %d with %d of the SSE readers' streams", victim, streams)
		progress(t, step)
		waitFor(t, "the SSE readers to resume", func() bool { return sseStreams.Load() >= opened+streams })
	})
	phase(t, "the instance restarted with the same flags is healthy and takes its share", func(t *testing.T) {
		restarted := time.Now()
		c.instances[victim].Restart(t)
		t.Logf("healthy %v after the restart", time.Since(restarted).Round(time.Millisecond))
		before := c.balancer.sent[victim].Load()
		progress(t, step)
		if c.balancer.sent[victim].Load() == before {
			t.Fatal("no request reached the restarted instance")
		}
	})
	phase(t, "the etcd leader stopped hard: a new one is elected, the load goes on", func(t *testing.T) {
		leader := etcd.WaitLeader(t)
		stopping := time.Now()
		etcd.Stop(leader)
		stopped := time.Since(stopping)
		next := etcd.WaitLeader(t)
		t.Logf("member %d stopped in %v, member %d leads %v after the stop began", leader, stopped.Round(time.Millisecond), next, time.Since(stopping).Round(time.Millisecond))
		progress(t, step)
		etcd.Restart(t, leader)
		etcd.WaitLeader(t)
		progress(t, step)
		for i, e := range c.at {
			waitFor(t, fmt.Sprintf("instance %d's /healthz", i), e.healthy)
		}
	})
	load := time.Since(began)

	var end uint64 // the id of the end message
	phase(t, "the posters and the readers finish without a problem", func(t *testing.T) {
		stopPosting.Store(true)
		posting.Wait()
		var err error
		if end, err = sendRetrying(ctx, sender, "end", map[string]string{"type": "end"}, &retried); err != nil {
			t.Fatalf("the end message: %v", err)
		}
		receiving.Wait()
		if p := problems(); p != "" {
			t.Fatalf("problems during the run:\n%s", p)
		}
		t.Logf("%d messages acknowledged in %v; %v; the SSE readers opened %d streams; %s",
			len(acked), load.Round(time.Millisecond), &retried, sseStreams.Load(), c.balancer.spread())
	})
	phase(t, "no id was answered twice", func(t *testing.T) {
		uniqueIDs(t, acked, end)
	})
	phase(t, "every reader got every acknowledged message once, in id order", func(t *testing.T) {
		for i, got := range gotSSE {
			checkExactlyOnce(t, fmt.Sprintf("SSE reader %d", i), got, sender.ClientID, acked, end)
		}
		for i, got := range gotPoll {
			checkExactlyOnce(t, fmt.Sprintf("long-poll reader %d", i), got, sender.ClientID, acked, end)
		}
	})
	phase(t, "SIGTERM: every instance exits with status 0", func(t *testing.T) {
		c.terminateAll(t, 10*time.Second)
	})
}

// TestClusterRooms runs three real tincan binaries on one three-member etcd
// cluster and holds them to what must be decided once for the whole
// cluster, each request sent to a chosen instance: racing joins, retries of
// an Idempotency-Key on other instances, the timeout of a silent member, a
// WebRTC call between peers on different instances, and, last, the loss
// of etcd's quorum (503 unavailable, never a wrong answer) and its return.
func TestClusterRooms(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the cluster test builds the binary and runs three of it on etcd")
	}
	const capacity, timeout = 4, 3 * time.Second
	etcd := etcdtest.Start(t, etcdtest.Config{Members: 3})
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	// All the racers come from 127.0.0.1: joins in flight from one address
	// count against the password-guess limit, which is off here.
	c := startTincanCluster(t, etcd, 3, hc,
		"-room-capacity", fmt.Sprint(capacity), "-client-timeout", timeout.String(),
		"-password-guesses", "0", "-room-password-guesses", "0",
		"-turn", "-turn-addr", "127.0.0.1:0", "-turn-public-ip", "127.0.0.1", "-turn-allow-loopback")
	at := func(i int) endpoint { return c.at[i%len(c.at)] }

	t.Run("racing joins over three instances: exactly capacity get in", func(t *testing.T) {
		const racers = 30
		var wg sync.WaitGroup
		answers := make([]answer, racers)
		errs := make([]error, racers)
		for i := range racers {
			wg.Go(func() { answers[i], errs[i] = at(i).request(context.Background(), "POST", "/rooms/race/join", "") })
		}
		wg.Wait()
		ids := map[string]bool{}
		for i, a := range answers {
			switch {
			case errs[i] != nil:
				t.Fatalf("join %d at instance %d: %v", i, i%3, errs[i])
			case a.Status == 201:
				var j client.Member
				if err := json.Unmarshal(a.Body, &j); err != nil || j.ClientID == "" {
					t.Fatalf("join %d answered 201 %s", i, a.Body)
				}
				ids[j.ClientID] = true
			case a.Status == 409 && a.problem(t) == "room_full":
			default:
				t.Fatalf("join %d at instance %d: %d %s (want 201 or 409 room_full)", i, i%3, a.Status, a.Body)
			}
		}
		if len(ids) != capacity {
			t.Fatalf("%d distinct members got in, want %d", len(ids), capacity)
		}
		for i := range 3 {
			waitFor(t, fmt.Sprintf("instance %d to count %d occupants", i, capacity), func() bool {
				return at(i).roomInfo(t, "race").Occupants == capacity
			})
			if a := at(i).do(t, "POST", "/rooms/race/join", ""); a.Status != 409 || a.problem(t) != "room_full" {
				t.Fatalf("a join after the race at instance %d: %d %s", i, a.Status, a.Body)
			}
		}
	})

	t.Run("an Idempotency-Key retried on other instances answers the first id and stores nothing", func(t *testing.T) {
		// The member's posts at other instances are raw: a Member is bound
		// to the URL it joined at.
		poster := at(0).join(t, "idem")
		reader := at(2).join(t, "idem") // its stream keeps it present
		s := at(2).events(t, reader, 0)
		s.ready(t)
		first, err := poster.Send(context.Background(), json.RawMessage(`{"type":"x","n":1}`), &client.SendOptions{IdempotencyKey: "k1"})
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i < 3; i++ {
			if id := at(i).post(t, poster, `{"type":"x","n":1}`, "Idempotency-Key", "k1"); id != first {
				t.Fatalf("the retry of k1 at instance %d answered id %d, the first post %d", i, id, first)
			}
		}
		// The same key posted at once on every instance, three times over.
		var wg sync.WaitGroup
		raced := make([]uint64, 9)
		failed := make([]error, 9)
		for i := range raced {
			wg.Go(func() {
				a, err := at(i).request(context.Background(), "POST", "/rooms/idem/messages", `{"type":"x","n":2}`, append(bearer(poster), "Idempotency-Key", "k2")...)
				var r struct{ ID uint64 }
				if err == nil && (a.Status != 201 || json.Unmarshal(a.Body, &r) != nil || r.ID == 0) {
					err = fmt.Errorf("%d %s", a.Status, a.Body)
				}
				raced[i], failed[i] = r.ID, err
			})
		}
		wg.Wait()
		for i, id := range raced {
			if failed[i] != nil {
				t.Fatalf("k2 at instance %d: %v (racing retries get 201, never a 5xx)", i%3, failed[i])
			}
			if id != raced[0] || id <= first {
				t.Fatalf("k2 answered ids %v; want one id, above %d", raced, first)
			}
		}
		end, err := poster.Send(context.Background(), map[string]string{"type": "end"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []uint64{first, raced[0], end} {
			if m := s.message(t); idOf(m) != want || m["from"] != poster.ClientID {
				t.Fatalf("the reader on instance 2 received %v; want id %d (each post once: %d, %d, %d)", m, want, first, raced[0], end)
			}
		}
		s.quiet(t, 300*time.Millisecond)
	})

	t.Run("a silent member times out once, seen by every instance; the members streaming anywhere stay", func(t *testing.T) {
		const room = "lapse"
		var observers []*client.Member
		var streams []*stream
		for i := range 3 {
			o := at(i).join(t, room)
			observers = append(observers, o)
			s := at(i).events(t, o, 0)
			s.ready(t)
			streams = append(streams, s)
		}
		silent := at(0).join(t, room)
		began := time.Now()
		// Every observer hears the peer-joined events of those after it and
		// of the silent member, then its peer-left once, reason timeout.
		for i, s := range streams {
			for {
				m := s.message(t)
				if m["type"] == "peer-joined" {
					continue
				}
				if m["type"] != "peer-left" || m["peer"] != silent.ClientID || m["reason"] != "timeout" {
					t.Fatalf("observer %d received %v; want the peer-left of %s, reason timeout", i, m, silent.ClientID)
				}
				break
			}
		}
		t.Logf("the silent member was removed %v after its join (client timeout %v)", time.Since(began).Round(time.Millisecond), timeout)
		// Another timeout later, a marker: a second peer-left would have
		// come before it.
		time.Sleep(timeout)
		marker, err := observers[0].Send(context.Background(), map[string]string{"type": "marker"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range streams[1:] { // the poster's own message does not come back to it
			if m := s.message(t); idOf(m) != marker || m["type"] != "marker" {
				t.Fatalf("observer %d received %v after the peer-left; want only the marker %d", i+1, m, marker)
			}
		}
		streams[0].quiet(t, 300*time.Millisecond)
		// The log itself holds one peer-left of it, whoever reads it.
		for i := 1; i < 3; i++ {
			p := at(i).poll(t, observers[i], 0, "0")
			n := 0
			for _, m := range p.Messages {
				if m["type"] == "peer-left" && m["peer"] == silent.ClientID {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("observer %d's messages from the start hold %d peer-left events of the silent member: %v", i, n, p.Messages)
			}
		}
		for i := range 3 {
			if info := at(i).roomInfo(t, room); info.Occupants != 3 {
				t.Fatalf("instance %d counts %d occupants after the timeout, want the 3 observers", i, info.Occupants)
			}
			if a := at(i).do(t, "GET", "/rooms/"+room+"/messages?wait=0", "", bearer(silent)...); a.Status != 401 {
				t.Fatalf("the removed member's token at instance %d: %d %s, want 401", i, a.Status, a.Body)
			}
		}
	})

	t.Run("a WebRTC call between peers on two instances, SSE on one side and long-poll on the other", func(t *testing.T) {
		const room = "call"
		errs := make(chan error, 16)
		var a, b *rtcPeer
		defer func() {
			for _, p := range []*rtcPeer{a, b} {
				if p != nil {
					p.stop()
				}
			}
		}()
		ca := at(0).join(t, room)
		a = newRTCPeer("A", client.EventStream, ca, errs)
		a.start(0, false)
		cb := at(1).join(t, room)
		if !cb.Initiator || len(cb.Peers) != 1 || cb.Peers[0] != ca.ClientID {
			t.Fatalf("second join answer %+v", cb)
		}
		b = newRTCPeer("B", client.LongPoll, cb, errs)
		a.other.Store(cb.ClientID)
		b.other.Store(ca.ClientID)
		started := time.Now()
		b.start(0, true)
		b.waitEcho(t, "ping B #1")
		t.Logf("the call connected in %v (A on instance 0 by SSE, B on instance 1 by long-poll)", time.Since(started).Round(time.Millisecond))
		if ev := a.waitPresence(t); ev["type"] != "peer-joined" || ev["peer"] != cb.ClientID {
			t.Fatalf("A got server event %v, want peer-joined of B", ev)
		}

		// B drops everything and resumes on the third instance.
		b.stop()
		last := b.lastID
		rc := at(2).rejoin(t, cb)
		if rc.ClientID != cb.ClientID || !rc.Initiator {
			t.Fatalf("B's resume at instance 2: %+v", rc)
		}
		b.member = rc
		started = time.Now()
		b.start(last, true)
		b.waitEcho(t, "ping B #2")
		t.Logf("the call connected again in %v, B now on instance 2", time.Since(started).Round(time.Millisecond))
		if ev := a.waitPresence(t); ev["type"] != "peer-joined" || ev["peer"] != cb.ClientID || ev["resumed"] != true {
			t.Fatalf("A got server event %v, want peer-joined of B with resumed:true", ev)
		}
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
	})

	t.Run("TURN credentials of one instance relay on another's TURN server: one secret, shared through etcd", func(t *testing.T) {
		const room = "relay"
		errs := make(chan error, 16)
		ca := at(0).join(t, room)
		cb := at(1).join(t, room)
		a := newRTCPeer("A", client.EventStream, ca, errs)
		b := newRTCPeer("B", client.LongPoll, cb, errs)
		// Each peer relays through the other instance's TURN server, with
		// the credentials its own instance gave it.
		a.config = crossRelayConfig(t, ca, cb)
		b.config = crossRelayConfig(t, cb, ca)
		a.other.Store(cb.ClientID)
		b.other.Store(ca.ClientID)
		before0 := at(0).metric(t, "tincan_turn_allocations_created_total")
		before1 := at(1).metric(t, "tincan_turn_allocations_created_total")
		a.start(0, false)
		defer a.stop()
		b.start(0, true)
		defer b.stop()
		started := time.Now()
		b.waitEcho(t, "ping B #1")
		t.Logf("the relayed call connected in %v", time.Since(started).Round(time.Millisecond))
		if at(0).metric(t, "tincan_turn_allocations_created_total") == before0 || at(1).metric(t, "tincan_turn_allocations_created_total") == before1 {
			t.Fatal("the call did not allocate on both instances' TURN servers")
		}
	})

	t.Run("etcd without quorum: 503 unavailable and /healthz 503, never a wrong answer; back once it returns", func(t *testing.T) {
		const room = "quorum"
		var retried retries
		poster := poster(t, at(0), room, &retried)
		reader := at(1).join(t, room)
		s := at(1).events(t, reader, 0)
		s.ready(t)
		before, err := poster.Send(context.Background(), json.RawMessage(`{"type":"x","n":1}`), nil)
		if err != nil {
			t.Fatal(err)
		}
		if m := s.message(t); idOf(m) != before {
			t.Fatalf("before the loss the reader received %v, want id %d", m, before)
		}

		leader := etcd.WaitLeader(t)
		lost := []int{(leader + 1) % 3, (leader + 2) % 3} // the leader stays, alone
		for _, i := range lost {
			etcd.Stop(i)
		}
		a, err := at(0).request(context.Background(), "POST", "/rooms/"+room+"/messages", `{"type":"x","n":2}`, append(bearer(poster), "Idempotency-Key", "q")...)
		if err != nil {
			t.Fatalf("a post without quorum: %v", err)
		}
		if a.Status != 503 || a.problem(t) != "unavailable" || a.Header.Get("Retry-After") == "" {
			t.Fatalf("a post without quorum: %d %v %s; want 503 unavailable with Retry-After", a.Status, a.Header, a.Body)
		}
		// The poster retries the same key meanwhile, as a client would.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		type result struct {
			id  uint64
			err error
		}
		acked := make(chan result, 1)
		go func() {
			id, err := sendRetrying(ctx, poster, "q", json.RawMessage(`{"type":"x","n":2}`), &retried)
			acked <- result{id, err}
		}()
		for i := range 3 {
			waitFor(t, fmt.Sprintf("instance %d's /healthz to answer 503", i), func() bool {
				a, err := at(i).request(context.Background(), "GET", "/healthz", "")
				return err == nil && a.Status == 503
			})
		}

		waitFor(t, "the retried post to be refused once more", func() bool { return retried.count("503 unavailable") > 0 })
		restored := time.Now()
		for _, i := range lost {
			etcd.Restart(t, i)
		}
		etcd.WaitLeader(t)
		for i := range 3 {
			waitFor(t, fmt.Sprintf("instance %d's /healthz", i), at(i).healthy)
		}
		t.Logf("every instance healthy %v after etcd's members came back", time.Since(restored).Round(time.Millisecond))
		// The refused post, retried all along, is stored once (now, or
		// already then: a 503 does not say that nothing was written).
		r := <-acked
		if r.err != nil {
			t.Fatalf("the post retried through the loss: %v (%v)", r.err, &retried)
		}
		t.Logf("the post retried through the loss: %v", &retried)
		if m := s.message(t); idOf(m) != r.id || fmt.Sprint(m["n"]) != "2" {
			t.Fatalf("after the return the reader received %v, want the retried post as id %d", m, r.id)
		}
		s.quiet(t, 300*time.Millisecond)
	})
	t.Run("SIGTERM: every instance exits with status 0", func(t *testing.T) { c.terminateAll(t, 10*time.Second) })
}

// crossRelayConfig is a relay-only configuration with the TURN credentials
// of own's join answer and the TURN URLs of other's: a call can connect
// only if other's instance accepts what own's instance issued.
func crossRelayConfig(t *testing.T, own, other *client.Member) webrtc.Configuration {
	t.Helper()
	turnOf := func(c *client.Member) webrtc.ICEServer {
		for _, s := range relayConfig(c).ICEServers {
			if s.Credential != nil && s.Credential != "" {
				return s
			}
		}
		t.Fatalf("no TURN server with credentials in %s", c.ICEServers)
		return webrtc.ICEServer{}
	}
	mine, theirs := turnOf(own), turnOf(other)
	if slices.Equal(mine.URLs, theirs.URLs) {
		t.Fatalf("both instances hand out the TURN URLs %v", mine.URLs)
	}
	mine.URLs = theirs.URLs
	return webrtc.Configuration{ICETransportPolicy: webrtc.ICETransportPolicyRelay, ICEServers: []webrtc.ICEServer{mine}}
}

// TestReadmeClusterNginxBlock runs the documented nginx block for several
// instances (docs/cluster.md, or the README before it moved there) as
// written, in front of three tincan binaries on etcd (its upstream's
// servers replaced by theirs): a call's requests and stream get through
// it, every instance gets requests, /metrics does not get through, and
// once an instance is killed the others take everything (posts retried
// with their Idempotency-Key after a 502 of nginx, as the clients do).
func TestReadmeClusterNginxBlock(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the cluster test builds the binary and runs three of it on etcd")
	}
	nginx := findNginx(t)
	var block, doc string
	for _, name := range []string{"../docs/cluster.md", "../README.md"} {
		data, _ := os.ReadFile(name)
		for _, part := range strings.Split(string(data), "\n```nginx\n")[1:] {
			if b, _, _ := strings.Cut(part, "\n```\n"); strings.Contains(b, "upstream tincan {") && block == "" {
				block, doc = b, name
			}
		}
	}
	servers := regexp.MustCompile(`(?m)^(\s*server )10\.0\.0\.\d+:8080( .*;)$`)
	if block == "" || len(servers.FindAllString(block, -1)) != 3 || !strings.Contains(block, "proxy_pass http://tincan;") {
		t.Fatalf("%q has no nginx block with an upstream tincan of three servers 10.0.0.x:8080 and proxy_pass http://tincan:\n%s", doc, block)
	}

	etcd := etcdtest.Start(t, etcdtest.Config{Members: 1})
	hc := &http.Client{Transport: &http.Transport{}}
	c := startTincanCluster(t, etcd, 3, hc)
	n := 0
	conf := servers.ReplaceAllStringFunc(block, func(line string) string {
		m := servers.FindStringSubmatch(line)
		n++
		return m[1] + c.at[n-1].addr() + m[2]
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	conf = strings.Replace(conf, "server {", fmt.Sprintf("server {\n    listen 127.0.0.1:%d;", port), 1)
	proxy := newEndpoint(t, func() string { return fmt.Sprintf("http://127.0.0.1:%d", port) }, hc)
	startNginx(t, nginx, conf, proxy)

	var retried retries
	alice := proxy.join(t, "nginx-cluster")
	stream := proxy.events(t, alice, 0)
	stream.ready(t)
	bob := poster(t, proxy, "nginx-cluster", &retried)
	if m := stream.message(t); m["type"] != "peer-joined" {
		t.Fatalf("alice's stream brought %v, want bob's peer-joined", m)
	}
	for range 12 {
		proxy.roomInfo(t, "nginx-cluster")
	}
	for i, e := range c.at {
		if e.metric(t, `tincan_http_requests_total{code="200"}`) == 0 {
			t.Errorf("instance %d answered no request through nginx", i)
		}
	}
	if a := proxy.do(t, "GET", "/metrics", ""); a.Status == 200 {
		t.Errorf("GET /metrics through the documented nginx: %d", a.Status)
	}

	c.instances[1].Kill(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var ids []uint64
	for i := range 10 {
		id, err := sendRetrying(ctx, bob, fmt.Sprint("k", i), map[string]any{"type": "x", "n": i}, &retried)
		if err != nil {
			t.Fatalf("post %d after the kill: %v", i, err)
		}
		ids = append(ids, id)
	}
	t.Logf("10 posts through nginx with an instance killed: %v", &retried)
	// Alice's stream may have been on the killed instance: read by long-poll.
	var got []uint64
	for since := uint64(0); len(got) < len(ids); {
		a, pa, err := proxy.longPoll(ctx, alice, since, "5")
		if err != nil || a.Status != 200 {
			t.Fatalf("alice's poll through nginx: %v %d %s", err, a.Status, a.Body)
		}
		for _, m := range pa.Messages {
			if m["type"] == "x" {
				got = append(got, idOf(m))
			}
		}
		since = pa.Next
	}
	if !slices.Equal(got, ids) {
		t.Fatalf("alice received ids %v, bob's posts were answered %v", got, ids)
	}
}

// findNginx finds nginx: without it the test fails under CI=true (CI
// installs it) and skips otherwise.
func findNginx(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true and nginx is not installed; .ci/run must install it")
	}
	t.Skip("nginx is not installed: apt-get install -y nginx")
	return ""
}

// startNginx runs nginx in the foreground with the server block (with its
// listen line) in a configuration whose files are all in a temp dir, until
// the end of the test, and waits until proxy's /healthz answers.
func startNginx(t *testing.T, nginx, server string, proxy endpoint) {
	t.Helper()
	dir := t.TempDir()
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 256; }
http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
%[2]s
}
`, dir, server)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(nginx, "-p", dir, "-c", path)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	for deadline := time.Now().Add(20 * time.Second); !proxy.healthy(); time.Sleep(50 * time.Millisecond) {
		select {
		case <-done:
		default:
			if time.Now().Before(deadline) {
				continue
			}
		}
		log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		t.Fatalf("nginx with the documented block did not come up (%v):\n%s\n%s\n%s", cmd.ProcessState, conf, &out, log)
	}
}
