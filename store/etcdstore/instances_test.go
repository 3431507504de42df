package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tincan/tincan/store"
)

// These tests run several instances of the engine on one prefix, as
// several tincan processes on one etcd would be: each has its own client,
// mirror, watch and leases.

var ctx0 = context.Background()

func mustJoin(t testing.TB, s *Store, room string) store.Joined {
	t.Helper()
	j, err := s.Join(ctx0, store.JoinRequest{Room: room})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func mustPost(t testing.TB, s *Store, p store.Post) store.Appended {
	t.Helper()
	a, err := s.Append(ctx0, p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func mustRead(t testing.TB, s *Store, m store.Member, after uint64) []store.Message {
	t.Helper()
	msgs, _, err := s.Read(ctx0, m, store.ReadRequest{After: after, Limit: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

func idsOf(msgs []store.Message) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

// eventually waits up to 20 s for cond.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not so after 20s", what)
		}
	}
}

// Thirty joins racing over three instances for the seats of one room:
// exactly Capacity get in, the others are told the room is full, and the
// members agree on who is in.
func TestInstancesRacingJoins(t *testing.T) {
	t.Parallel()
	const capacity, racers = 4, 30
	ss := openN(t, 3, store.Options{Capacity: capacity})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var in []store.Joined
	for i := range racers {
		wg.Go(func() {
			j, err := ss[i%3].Join(ctx0, store.JoinRequest{Room: "r"})
			switch {
			case err == nil:
				mu.Lock()
				in = append(in, j)
				mu.Unlock()
			case !errors.Is(err, store.ErrRoomFull):
				t.Errorf("join on instance %d: %v", i%3, err)
			}
		})
	}
	wg.Wait()
	if len(in) != capacity {
		t.Fatalf("%d of %d racing joins over 3 instances got in, capacity %d", len(in), racers, capacity)
	}
	for i, s := range ss {
		eventually(t, fmt.Sprint("instance ", i, " shows every member"), func() bool {
			n, _ := s.Occupants(ctx0, "r")
			return n == capacity
		})
	}
	// Each member heard of exactly those who joined after it.
	slices.SortFunc(in, func(a, b store.Joined) int { return len(a.Peers) - len(b.Peers) })
	for k, j := range in {
		var heard []string
		for _, msg := range mustRead(t, ss[k%3], j.Member, 0) {
			heard = append(heard, string(msg.Data))
		}
		if len(heard) != capacity-1-k {
			t.Fatalf("member %d of %d reads %d events, want %d: %v", k, capacity, len(heard), capacity-1-k, heard)
		}
	}
}

// A retry of a post with the same Idempotency-Key on another instance gets
// the first post's id and stores nothing, also when the retries race.
func TestInstancesIdempotency(t *testing.T) {
	t.Parallel()
	ss := openN(t, 3, store.Options{})
	a := mustJoin(t, ss[0], "r")
	b := mustJoin(t, ss[1], "r")
	first := mustPost(t, ss[0], store.Post{From: a.Member, IdempotencyKey: "k1", Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}})
	again := mustPost(t, ss[1], store.Post{From: a.Member, IdempotencyKey: "k1", Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}})
	if !again.Repeat || again.ID != first.ID {
		t.Fatalf("the retry on another instance: %+v, want id %d, Repeat", again, first.ID)
	}

	// Racing: the same key posted at once on all three.
	var wg sync.WaitGroup
	results := make([]store.Appended, 12)
	for i := range results {
		wg.Go(func() {
			r, err := ss[i%3].Append(ctx0, store.Post{From: a.Member, IdempotencyKey: "k2", Messages: []store.Draft{{Fields: []byte(fmt.Sprintf(`"type":"y","try":%d`, i))}}})
			if err != nil {
				t.Errorf("post %d: %v", i, err)
			}
			results[i] = r
		})
	}
	wg.Wait()
	stored := 0
	for _, r := range results {
		if r.ID != results[0].ID {
			t.Fatalf("racing retries got ids %v", results)
		}
		if !r.Repeat {
			stored++
		}
	}
	if stored != 1 {
		t.Fatalf("%d racing retries over 3 instances stored a message, want 1", stored)
	}
	for i, s := range ss {
		eventually(t, fmt.Sprint("b reads two messages on instance ", i), func() bool {
			msgs := mustRead(t, s, b.Member, 0)
			return slices.Equal(idsOf(msgs), []uint64{first.ID, results[0].ID})
		})
	}
}

// A member that nobody sees is removed once, with one peer-left event of
// reason timeout, however many instances notice its lease lapse; a member
// held on another instance than the one it joined on stays.
func TestInstancesTimeoutOnce(t *testing.T) {
	t.Parallel()
	// A timeout of seconds, not less: a member held on a starved machine
	// (the race detector, every package's tests at once) must still be
	// renewed in time.
	ss := openN(t, 3, store.Options{Capacity: 3, ClientTimeout: 3 * time.Second})
	a := mustJoin(t, ss[0], "r")
	b := mustJoin(t, ss[1], "r")
	c := mustJoin(t, ss[2], "r")
	defer ss[1].Hold(a.Member)() // a joined on 0, listens on 1
	defer ss[2].Hold(c.Member)()
	eventually(t, "b, silent, is removed", func() bool {
		_, err := ss[0].Authenticate(ctx0, b.Token)
		return errors.Is(err, store.ErrUnauthorized)
	})
	time.Sleep(2 * time.Second) // time for a second removal, if there were one
	for _, reader := range []struct {
		s *Store
		m store.Member
	}{{ss[1], a.Member}, {ss[0], c.Member}} {
		var lefts []event
		for _, msg := range mustRead(t, reader.s, reader.m, 0) {
			if e := parseEvent(t, msg); e.Type == "peer-left" {
				lefts = append(lefts, e)
			}
		}
		if len(lefts) != 1 || lefts[0].Peer != b.ID || lefts[0].Reason != "timeout" {
			t.Fatalf("%s was told %+v, want one peer-left of %s for timeout", reader.m.ID, lefts, b.ID)
		}
	}
	for i, s := range ss {
		if _, err := s.Authenticate(ctx0, a.Token); err != nil {
			t.Fatalf("a, held on instance 1, is gone on instance %d: %v", i, err)
		}
	}
}

// event is a delivered entry as a client parses it.
type event struct {
	ID     uint64 `json:"id"`
	From   string `json:"from"`
	Type   string `json:"type"`
	Peer   string `json:"peer"`
	Reason string `json:"reason"`
}

func parseEvent(t testing.TB, msg store.Message) event {
	t.Helper()
	var e event
	if err := json.Unmarshal(msg.Data, &e); err != nil || e.ID != msg.ID {
		t.Fatalf("entry %d reads %s (%v)", msg.ID, msg.Data, err)
	}
	return e
}

// Posts on two instances reach a live reader on a third, each once and in
// id order, as the handlers read: subscribe, read after the last id, wait.
func TestInstancesDelivery(t *testing.T) {
	t.Parallel()
	ss := openN(t, 3, store.Options{Capacity: 3})
	a := mustJoin(t, ss[0], "r")
	b := mustJoin(t, ss[1], "r")
	c := mustJoin(t, ss[2], "r")
	for _, m := range []store.Joined{a, b} {
		mustRead(t, ss[0], m.Member, 0)
	}
	base := mustRead(t, ss[2], c.Member, 0) // nothing, or nothing yet: c joined last
	var after uint64
	if len(base) > 0 {
		after = base[len(base)-1].ID
	}

	const perWriter = 100
	woken := make(chan struct{}, 1)
	defer ss[2].Subscribe(c.Member, func(uint64) {
		select {
		case woken <- struct{}{}:
		default:
		}
	})()
	var sent sync.Map
	var wg sync.WaitGroup
	for w, writer := range []struct {
		s *Store
		m store.Member
	}{{ss[0], a.Member}, {ss[1], b.Member}} {
		wg.Go(func() {
			for i := range perWriter {
				r, err := writer.s.Append(ctx0, store.Post{From: writer.m, Messages: []store.Draft{{Fields: []byte(fmt.Sprintf(`"type":"x","w":%d,"i":%d`, w, i))}}})
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				sent.Store(r.ID, true)
			}
		})
	}
	var got []uint64
	timeout := time.After(30 * time.Second)
	for len(got) < 2*perWriter {
		msgs, _, err := ss[2].Read(ctx0, c.Member, store.ReadRequest{After: after, Limit: 16, Acknowledge: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, msg := range msgs {
			if msg.ID <= after {
				t.Fatalf("entry %d after %d", msg.ID, after)
			}
			after = msg.ID
			got = append(got, msg.ID)
		}
		if len(msgs) > 0 {
			continue
		}
		select {
		case <-woken:
		case <-timeout:
			t.Fatalf("stalled at %d of %d entries", len(got), 2*perWriter)
		}
	}
	wg.Wait()
	for _, id := range got {
		if _, ok := sent.Load(id); !ok {
			t.Fatalf("c read entry %d, which nobody posted", id)
		}
	}
	if more := mustRead(t, ss[2], c.Member, after); len(more) != 0 {
		t.Fatalf("c reads %d more entries than were posted", len(more))
	}
}

// A member that joined on one instance authenticates at once on another
// (whose mirror may not have seen the join yet), and once it has left on
// one, no instance authenticates it, reads for it or takes its posts.
func TestInstancesJoinAndLeaveElsewhere(t *testing.T) {
	t.Parallel()
	ss := openN(t, 3, store.Options{})
	for i := range 20 {
		room := fmt.Sprint("r", i)
		a := mustJoin(t, ss[i%3], room)
		other := ss[(i+1)%3]
		if m, err := other.Authenticate(ctx0, a.Token); err != nil || m != a.Member {
			t.Fatalf("just joined on instance %d, authenticated on %d: %+v, %v", i%3, (i+1)%3, m, err)
		}
		b := mustJoin(t, other, room)
		if !slices.Equal(b.Peers, []string{a.ID}) {
			t.Fatalf("b, joining on another instance right after a, sees peers %v", b.Peers)
		}
		mustPost(t, ss[(i+2)%3], store.Post{From: b.Member, Messages: []store.Draft{{To: a.ID, Fields: []byte(`"type":"x"`)}}})
		if _, err := ss[i%3].Leave(ctx0, a.Member, store.ReasonLeft); err != nil {
			t.Fatal(err)
		}
		for k, s := range ss {
			if _, err := s.Authenticate(ctx0, a.Token); !errors.Is(err, store.ErrUnauthorized) {
				// Within the watch's latency: give it that, no more.
				eventually(t, fmt.Sprint("a's token refused on instance ", k), func() bool {
					_, err := s.Authenticate(ctx0, a.Token)
					return errors.Is(err, store.ErrUnauthorized)
				})
			}
			if _, err := s.Append(ctx0, store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}}); !errors.Is(err, store.ErrUnauthorized) {
				t.Fatalf("a post of a member who left, on instance %d: %v", k, err)
			}
			if _, _, err := s.Read(ctx0, a.Member, store.ReadRequest{Limit: 1}); !errors.Is(err, store.ErrUnauthorized) {
				t.Fatalf("a read of a member who left, on instance %d: %v", k, err)
			}
		}
	}
}

// An instance's mirror follows the others': a subscriber on one instance
// is told of a member's removal made on another, and of its peers' posts.
func TestInstancesNotifyRemoval(t *testing.T) {
	t.Parallel()
	ss := openN(t, 2, store.Options{})
	a := mustJoin(t, ss[0], "r")
	b := mustJoin(t, ss[0], "r")
	mustRead(t, ss[1], a.Member, 0)
	told := make(chan struct{}, 1)
	defer ss[1].Subscribe(a.Member, func(upto uint64) {
		select {
		case told <- struct{}{}:
		default:
		}
	})()
	gone := make(chan struct{})
	var once sync.Once
	defer ss[1].Subscribe(b.Member, func(upto uint64) {
		if upto == 0 {
			once.Do(func() { close(gone) })
		}
	})()
	if _, err := ss[0].Leave(ctx0, b.Member, store.ReasonLeft); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gone:
	case <-time.After(20 * time.Second):
		t.Fatal("the subscriber on the other instance was not told of the removal")
	}
	if _, _, err := ss[1].Read(ctx0, b.Member, store.ReadRequest{Limit: 1}); !errors.Is(err, store.ErrUnauthorized) {
		t.Fatalf("read after the removal was announced: %v", err)
	}
	select {
	case <-told:
	case <-time.After(20 * time.Second):
		t.Fatal("a's subscriber on the other instance was not told of b's peer-left event")
	}
	msgs := mustRead(t, ss[1], a.Member, 0)
	if e := parseEvent(t, msgs[len(msgs)-1]); e.Type != "peer-left" || e.Peer != b.ID {
		t.Fatalf("a reads %s last, want b's peer-left", msgs[len(msgs)-1].Data)
	}
}
