package faults

// The traffic of a run, every call recorded in the History:
//
//   - two main rooms, each with a poster member posting from three
//     goroutines (each post its own Idempotency-Key, retried by the client
//     on no answer or 5xx), an SSE reader and a long-poll reader;
//   - a churn room with an SSE and a long-poll reader, where members join,
//     post once and leave, or join and fall silent (removed at the client
//     timeout);
//   - race rooms, where ten joins race for the six seats;
//   - retention rooms, filled close to -max-room-messages and then posted
//     into by racing posts until refused; a member that acknowledges
//     nothing counts what the room retained.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tincan/tincan/client"
)

type traffic struct {
	t   *testing.T
	h   *History
	c   *cluster
	api *client.Client // retries posts while their context lasts
	one *client.Client // tries once
	hc  *http.Client

	stop    context.Context // done: no new work
	readers context.Context // done: readers give up
	wg      sync.WaitGroup  // the actors but the readers
	rwg     sync.WaitGroup  // the readers
	kwg     sync.WaitGroup  // the hosts' keep-alive polls
	cancel  context.CancelFunc

	noMoreSilent atomic.Bool // set once silent members would time out too late for the drain

	mu     sync.Mutex
	hosts  map[string]*client.Member // room -> the member that posts its end message
	silent []string                  // silent members' ids, in the churn room
}

var (
	mainRooms = []string{"main-0", "main-1"}
	churnRoom = "churn"
)

// startTraffic joins the readers and hosts and starts every actor; the
// actors stop starting new calls once stop is done.
func startTraffic(t *testing.T, c *cluster, stop context.Context) *traffic {
	hc := &http.Client{Transport: joinTries{&http.Transport{MaxIdleConnsPerHost: 64}, c.h}}
	t.Cleanup(hc.CloseIdleConnections)
	api, err := client.New(c.url, client.WithHTTPClient(hc), client.WithRetries(1<<30, 50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	one, _ := client.New(c.url, client.WithHTTPClient(hc), client.WithRetries(1, 50*time.Millisecond))
	readers, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	tr := &traffic{t: t, h: c.h, c: c, api: api, one: one, hc: hc, stop: stop, readers: readers, cancel: cancel, hosts: map[string]*client.Member{}}
	for _, room := range append([]string{churnRoom}, mainRooms...) {
		host := tr.mustJoin(room)
		tr.hosts[room] = host
		tr.kwg.Go(func() { tr.keepAlive(host) })
		for _, transport := range []client.Transport{client.EventStream, client.LongPoll} {
			m := tr.mustJoin(room)
			tr.rwg.Go(func() { tr.read(m, transport) })
		}
		if room != churnRoom {
			for g := range 3 {
				tr.wg.Go(func() { tr.post(host, g) })
			}
		}
	}
	tr.wg.Go(tr.churn)
	tr.wg.Go(tr.race)
	tr.wg.Go(tr.retention)
	return tr
}

// joinTries records each try of a join that got a 5xx or no answer.
type joinTries struct {
	next http.RoundTripper
	h    *History
}

func (jt joinTries) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := jt.next.RoundTrip(req)
	if req.Method == "POST" && strings.HasSuffix(req.URL.Path, "/join") && (err != nil || resp.StatusCode >= 500) {
		room := strings.TrimSuffix(strings.TrimPrefix(req.URL.Path, "/rooms/"), "/join")
		status := 0
		if err == nil {
			status = resp.StatusCode
		}
		jt.h.AddFailedJoin(FailedJoin{Room: room, Status: status, At: jt.h.Now()})
	}
	return resp, err
}

func (jt joinTries) CloseIdleConnections() {
	if c, ok := jt.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// mustJoin joins room for the run's lifetime (the test fails if it
// cannot, before any fault).
func (tr *traffic) mustJoin(room string) *client.Member {
	m, ok := tr.join(room, false)
	if !ok {
		tr.t.Fatalf("cannot join %s before the fault", room)
	}
	return m
}

// join joins room and records it.
func (tr *traffic) join(room string, silent bool) (*client.Member, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	j := Join{Room: room, Start: tr.h.Now(), Silent: silent}
	m, err := tr.api.Join(ctx, room, client.JoinOptions{})
	j.End = tr.h.Now()
	j.Outcome, j.Code = outcome(err)
	if err == nil {
		j.ClientID, j.Occupants, j.Capacity = m.ClientID, len(m.Peers)+1, m.Capacity
	}
	tr.h.AddJoin(j)
	return m, err == nil
}

// leave leaves and records it. It speaks HTTP itself: the client's Leave
// answers nil for a member already gone, and the history must tell a
// departure by this leave (204) from one before it (401: a timeout).
// Network failures and 5xx are retried; a 401 after such a failure is of
// unknown outcome (the failed try may have been the leave).
func (tr *traffic) leave(m *client.Member) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l := Leave{Room: m.Room, ClientID: m.ClientID, Start: tr.h.Now(), Outcome: Unknown}
	tried := false
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, "POST", tr.c.url+"/rooms/"+m.Room+"/leave", nil)
		req.Header.Set("Authorization", "Bearer "+m.Token)
		resp, err := tr.hc.Do(req)
		if err == nil {
			resp.Body.Close()
			switch {
			case resp.StatusCode == http.StatusNoContent:
				l.Outcome = OK
			case resp.StatusCode < 500 && !tried:
				l.Outcome = Refused
			case resp.StatusCode < 500:
				l.Outcome = Unknown
			}
			if resp.StatusCode < 500 {
				break
			}
		}
		tried = true
		time.Sleep(100 * time.Millisecond)
	}
	l.End = tr.h.Now()
	tr.h.AddLeave(l)
}

// send posts one load message with key as its Idempotency-Key and
// records it.
func (tr *traffic) send(m *client.Member, key string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := Post{Room: m.Room, Sender: m.ClientID, Key: key, Start: tr.h.Now()}
	id, err := m.Send(ctx, map[string]string{"type": "load", "k": key}, &client.SendOptions{IdempotencyKey: key})
	p.End = tr.h.Now()
	p.Outcome, p.Code = outcome(err)
	p.ID = id
	tr.h.AddPost(p)
}

// outcome classes an error: a 4xx refusal, or unknown (anything else).
func outcome(err error) (Outcome, string) {
	var e *client.Error
	switch {
	case err == nil:
		return OK, ""
	case errors.As(err, &e) && e.Status < 500 && e.Status != http.StatusRequestTimeout:
		return Refused, e.Code
	default:
		return Unknown, err.Error()
	}
}

func (tr *traffic) stopped() bool { return tr.stop.Err() != nil }

// post is one of a poster's goroutines.
func (tr *traffic) post(m *client.Member, g int) {
	for i := 0; !tr.stopped(); i++ {
		tr.send(m, fmt.Sprintf("%s-g%d-%d", m.Room, g, i))
		time.Sleep(30 * time.Millisecond)
	}
}

// read receives until the room's end message (or a final error) and
// records what arrives.
func (tr *traffic) read(m *client.Member, transport client.Transport) {
	r := Reader{Room: m.Room, ClientID: m.ClientID}
	tr.h.mu.Lock()
	for _, j := range tr.h.Joins {
		if j.ClientID == m.ClientID {
			r.Joined = j.End
		}
	}
	tr.h.mu.Unlock()
	opts := &client.ReceiveOptions{Transport: transport, AckEvery: 250 * time.Millisecond, Hooks: client.Hooks{
		OnStale: func(id, cursor uint64) {
			tr.h.AddStale(Stale{Room: m.Room, Reader: m.ClientID, ID: id, Cursor: cursor, At: tr.h.Now()})
		},
	}}
	for msg, err := range m.Receive(tr.readers, opts) {
		if err != nil {
			r.Err = err.Error()
			break
		}
		var body struct {
			Type, From, K, Peer, Reason string
		}
		json.Unmarshal(msg.Data, &body)
		tr.h.AddDelivery(Delivery{Room: m.Room, Reader: m.ClientID, ID: msg.ID, Type: body.Type, From: body.From,
			Key: body.K, Peer: body.Peer, Reason: body.Reason, At: tr.h.Now()})
		if body.Type == "end" {
			r.Drained = true
			break
		}
	}
	if !r.Drained && r.Err == "" {
		r.Err = "gave up waiting: " + fmt.Sprint(tr.readers.Err())
	}
	r.Ended = tr.h.Now()
	tr.h.AddReader(r)
}

// keepAlive polls for m every second, acknowledging nothing, until the
// readers stop: a host that posts seldom, or whose posts wait out a
// fault, is not a silent member.
func (tr *traffic) keepAlive(m *client.Member) {
	for tr.readers.Err() == nil {
		tr.poll(tr.readers, m, 0)
		select {
		case <-tr.readers.Done():
		case <-time.After(time.Second):
		}
	}
}

// churn joins members into the churn room: three of four post once and
// leave, the fourth falls silent (until noMoreSilent).
func (tr *traffic) churn() {
	for i := 0; !tr.stopped(); i++ {
		silent := i%4 == 3 && !tr.noMoreSilent.Load()
		m, ok := tr.join(churnRoom, silent)
		if ok && silent {
			tr.mu.Lock()
			tr.silent = append(tr.silent, m.ClientID)
			tr.mu.Unlock()
		}
		if ok && !silent {
			tr.send(m, fmt.Sprintf("churn-%d", i))
			tr.leave(m)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// race makes ten joins race for a fresh room's seats, then the members
// leave.
func (tr *traffic) race() {
	for k := 0; !tr.stopped(); k++ {
		room := fmt.Sprintf("race-%d", k)
		var mu sync.Mutex
		var in []*client.Member
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				if m, ok := tr.join(room, false); ok {
					mu.Lock()
					in = append(in, m)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		for _, m := range in {
			tr.leave(m)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// retention fills a fresh room to a few entries short of
// -max-room-messages, has posts race for the rest from three goroutines
// (through the balancer, so on several instances) until each is refused,
// and counts what the room retained; then the room is left.
func (tr *traffic) retention() {
	for k := 0; !tr.stopped(); k++ {
		room := fmt.Sprintf("retention-%d", k)
		x, ok := tr.join(room, false)
		if !ok {
			time.Sleep(time.Second)
			continue
		}
		y, ok := tr.join(room, false)
		if !ok {
			tr.leave(x)
			time.Sleep(time.Second)
			continue
		}
		alive, stopAlive := context.WithCancel(context.Background())
		var keep sync.WaitGroup
		keep.Go(func() { // x must not time out: a poll that acknowledges nothing
			for alive.Err() == nil {
				tr.poll(alive, x, 0)
				select {
				case <-alive.Done():
				case <-time.After(time.Second):
				}
			}
		})
		// Entries: y's peer-joined, then the fill.
		fill := maxRoomMessages - 1 - 12
		for b := 0; fill > 0 && !tr.stopped(); b++ {
			n := min(fill, 64)
			msgs := make([]any, n)
			for i := range msgs {
				msgs[i] = map[string]string{"type": "fill"}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := y.SendBatch(ctx, msgs, &client.SendOptions{IdempotencyKey: fmt.Sprintf("%s-fill-%d", room, b)})
			cancel()
			if err != nil {
				break
			}
			fill -= n
		}
		if yOne, ok := tr.resume(y, tr.one); fill == 0 && ok {
			race, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			var wg sync.WaitGroup
			for g := range 3 {
				wg.Go(func() {
					for i := 0; race.Err() == nil && i < 20; i++ {
						_, err := yOne.Send(race, map[string]string{"type": "fill"}, &client.SendOptions{IdempotencyKey: fmt.Sprintf("%s-race-%d-%d", room, g, i)})
						if errors.Is(err, client.ErrTooManyMessages) {
							return
						}
					}
				})
			}
			wg.Wait()
			cancel()
			if n, ok := tr.countRetained(x); ok {
				tr.h.AddRetained(Retained{Room: room, Count: n, At: tr.h.Now()})
			}
		}
		stopAlive()
		keep.Wait()
		tr.leave(x)
		tr.leave(y)
	}
}

// resume is m as seen through another client (with its retries): the
// same member, resumed by its token.
func (tr *traffic) resume(m *client.Member, c *client.Client) (*client.Member, bool) {
	for range 10 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		j := Join{Room: m.Room, ResumeOf: m.ClientID, Start: tr.h.Now()}
		r, err := c.Join(ctx, m.Room, client.JoinOptions{Token: m.Token})
		cancel()
		j.End = tr.h.Now()
		j.Outcome, j.Code = outcome(err)
		if err == nil {
			j.ClientID, j.Occupants, j.Capacity = r.ClientID, len(r.Peers)+1, r.Capacity
		}
		tr.h.AddJoin(j)
		if err == nil {
			if !r.Resumed {
				tr.leave(r) // a new member: do not leave it behind
			}
			return r, r.Resumed
		}
		time.Sleep(200 * time.Millisecond)
	}
	return nil, false
}

// poll is one long-poll of m's messages after since that does not wait;
// it returns them, and ok when it was answered.
func (tr *traffic) poll(ctx context.Context, m *client.Member, since uint64) (ids []uint64, next uint64, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", tr.c.url+"/rooms/"+m.Room+"/messages?wait=0&since="+strconv.FormatUint(since, 10), nil)
	req.Header.Set("Authorization", "Bearer "+m.Token)
	resp, err := tr.hc.Do(req)
	if err != nil {
		return nil, 0, false
	}
	defer resp.Body.Close()
	var body struct {
		Messages []struct{ ID uint64 }
		Next     uint64
	}
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&body) != nil {
		return nil, 0, false
	}
	for _, msg := range body.Messages {
		ids = append(ids, msg.ID)
	}
	return ids, body.Next, true
}

// countRetained reads every entry retained for m, a page at a time.
func (tr *traffic) countRetained(m *client.Member) (int, bool) {
	var since uint64
	n := 0
	for range 100 {
		ids, next, ok := tr.poll(context.Background(), m, since)
		if !ok {
			return 0, false
		}
		if len(ids) == 0 {
			return n, true
		}
		n += len(ids)
		since = next
	}
	return n, true
}

// drain waits (at most within) until the churn room's readers were told
// that every silent member left, then posts each room's end message.
func (tr *traffic) drain(within time.Duration) {
	tr.wg.Wait()
	tr.t.Logf("actors done at %v", tr.h.Now().Round(time.Millisecond))
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) && !tr.silentGone() {
		time.Sleep(200 * time.Millisecond)
	}
	for room, host := range tr.hosts {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		if _, err := host.Send(ctx, map[string]string{"type": "end"}, nil); err != nil {
			tr.t.Errorf("the end message of %s: %v", room, err)
		}
		cancel()
	}
}

// finish waits (at most within) for the readers to reach the end
// messages, then stops them and the keep-alives.
func (tr *traffic) finish(within time.Duration) {
	done := make(chan struct{})
	go func() { tr.rwg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(within):
	}
	tr.cancel()
	<-done
	tr.kwg.Wait()
}

// silentGone says whether each churn reader has had peer-left for every
// silent member.
func (tr *traffic) silentGone() bool {
	tr.mu.Lock()
	silent := append([]string(nil), tr.silent...)
	tr.mu.Unlock()
	tr.h.mu.Lock()
	defer tr.h.mu.Unlock()
	left := map[string]int{}
	for _, d := range tr.h.Deliveries {
		if d.Room == churnRoom && d.Type == "peer-left" {
			left[d.Peer]++
		}
	}
	for _, id := range silent {
		if left[id] < 2 { // both readers
			return false
		}
	}
	return true
}
