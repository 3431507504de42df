package handlers

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tincan/tincan/store"
	"github.com/tincan/tincan/store/boltstore"
)

// testClock is a clock that moves only when told.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// guess joins room with password from the client address ip (the API
// trusts X-Forwarded-For), with token as the bearer unless "".
func (a *testAPI) guess(room, ip, password, token string) answer {
	a.t.Helper()
	body, _ := json.Marshal(map[string]string{"password": password})
	req, err := http.NewRequest("POST", a.url+"/rooms/"+room+"/join", strings.NewReader(string(body)))
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("X-Forwarded-For", ip)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("join %s from %s: %v", room, ip, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: data}
}

// refusedGuess fails t unless ans is a 429 too_many_guesses that says to
// retry after retryAfter seconds.
func refusedGuess(t *testing.T, what string, ans answer, retryAfter string) {
	t.Helper()
	if ans.status != http.StatusTooManyRequests || ans.problemCode() != "too_many_guesses" || ans.header.Get("Retry-After") != retryAfter {
		t.Fatalf("%s: %d (Retry-After %q) %s; want 429 too_many_guesses, Retry-After %s", what, ans.status, ans.header.Get("Retry-After"), ans.body, retryAfter)
	}
}

// Failed password guesses are limited per room and address, and per room;
// a refused guess is refused before any password is compared, a member
// resuming is never refused, and the window frees the slots.
func TestPasswordGuesses(t *testing.T) {
	clock := &testClock{now: time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)}
	a := newTestAPI(t, Config{TrustProxy: true, PasswordGuesses: 2, RoomPasswordGuesses: 3, PasswordGuessWindow: time.Minute, Now: clock.Now}, boltstore.Options{})
	first := a.guess("locked", "10.0.0.100", "right", "")
	if first.status != http.StatusCreated {
		t.Fatalf("the first member locks the room: %d %s", first.status, first.body)
	}
	var owner struct{ Token string }
	json.Unmarshal(first.body, &owner)

	// Ten guesses at once from one address: two are compared (and fail),
	// the others are refused before, as they would be one after another.
	answers := make(chan answer, 10)
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers <- a.guess("locked", "10.0.0.1", "wrong", "")
		}()
	}
	wg.Wait()
	close(answers)
	var failed int
	for ans := range answers {
		if ans.status == http.StatusForbidden && ans.problemCode() == "bad_password" {
			failed++
			continue
		}
		// 1 s while the two are in flight, the window once they failed.
		retry := ans.header.Get("Retry-After")
		if retry != "1" {
			retry = "60"
		}
		refusedGuess(t, "a guess beyond the address's two", ans, retry)
	}
	if failed != 2 {
		t.Fatalf("%d of 10 guesses at once were compared, want 2", failed)
	}
	// The right password is refused too: telling it apart would take the
	// comparison that the limit saves.
	refusedGuess(t, "the right password from an address out of guesses", a.guess("locked", "10.0.0.1", "right", ""), "60")

	// Another address has its own two, but the room only one more.
	if ans := a.guess("locked", "10.0.0.2", "wrong", ""); ans.status != http.StatusForbidden {
		t.Fatalf("a guess from a second address: %d %s", ans.status, ans.body)
	}
	refusedGuess(t, "a guess at a room out of guesses", a.guess("locked", "10.0.0.3", "right", ""), "60")
	// Another room is not affected.
	if ans := a.guess("other", "10.0.0.1", "", ""); ans.status != http.StatusCreated {
		t.Fatalf("a join of another room: %d %s", ans.status, ans.body)
	}

	// The room's member resumes from any address, even one out of guesses.
	if ans := a.guess("locked", "10.0.0.1", "", owner.Token); ans.status != http.StatusOK {
		t.Fatalf("the member resuming: %d %s", ans.status, ans.body)
	}

	if f, r := a.metric(`tincan_password_guesses_total{outcome="failed"}`), a.metric(`tincan_password_guesses_total{outcome="refused"}`); f != 3 || r != 10 {
		t.Errorf("metrics: %v failed, %v refused; want 3 and 10", f, r)
	}

	// A second before the window ends, still refused; at its end, the
	// right password gets in at once.
	clock.advance(59 * time.Second)
	refusedGuess(t, "a guess a second before the window ends", a.guess("locked", "10.0.0.1", "right", ""), "1")
	clock.advance(time.Second)
	if ans := a.guess("locked", "10.0.0.1", "right", ""); ans.status != http.StatusCreated {
		t.Fatalf("the right password after the window: %d %s", ans.status, ans.body)
	}

	// With nothing left in the window, the limiter forgets the room.
	a.srv.guesses.sweep(clock.Now())
	a.srv.guesses.mu.Lock()
	rooms, addrs := len(a.srv.guesses.rooms), len(a.srv.guesses.addrs)
	a.srv.guesses.mu.Unlock()
	if rooms != 0 || addrs != 0 {
		t.Errorf("after the window the limiter still holds %d rooms and %d addresses", rooms, addrs)
	}
}

// A limit of zero switches it off: any number of failed guesses is
// admitted, and nothing is kept.
func TestGuessLimiterOff(t *testing.T) {
	g := newGuessLimiter(0, 0, time.Minute)
	now := time.Now()
	for i := range 100 {
		done, _ := g.admit("locked", "10.0.0.1", now)
		if done == nil {
			t.Fatalf("guess %d refused without limits", i)
		}
		done(true, now)
	}
	if len(g.rooms) != 0 || len(g.addrs) != 0 {
		t.Errorf("without limits the limiter holds %d rooms and %d addresses", len(g.rooms), len(g.addrs))
	}
	// One limit off, the other on: only that one counts.
	g = newGuessLimiter(0, 3, time.Minute)
	for i := range 3 {
		done, _ := g.admit("locked", "10.0.0."+strconv.Itoa(i), now)
		if done == nil {
			t.Fatalf("guess %d refused within the room's three", i)
		}
		done(true, now)
	}
	if done, wait := g.admit("locked", "10.0.0.9", now); done != nil || wait != time.Minute {
		t.Fatalf("a fourth guess at the room: admitted %v, wait %v; want refused for a minute", done != nil, wait)
	}
	if len(g.addrs) != 0 {
		t.Errorf("with no address limit the limiter holds %d addresses", len(g.addrs))
	}
}

// Joins without a password are no guesses: many people joining an open
// room from one address at the same moment all get in.
func TestJoinsWithoutPasswordAreNoGuesses(t *testing.T) {
	a := newTestAPI(t, Config{PasswordGuesses: 1, RoomPasswordGuesses: 1}, boltstore.Options{Options: store.Options{Capacity: 12}})
	var wg sync.WaitGroup
	statuses := make([]int, 12)
	for i := range statuses {
		wg.Go(func() { statuses[i] = a.do("POST", "/rooms/open/join", "", "").status })
	}
	wg.Wait()
	for i, st := range statuses {
		if st != http.StatusCreated {
			t.Fatalf("join %d of 12 at once from one address: %d; want 201 (a join without a password is no guess)", i, st)
		}
	}
}
