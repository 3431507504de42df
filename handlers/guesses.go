package handlers

import (
	"errors"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/tincan/tincan/store"
)

// admitGuess admits a join of room as a guess at its password, unless it
// is a resume (the token of a member of room: resumeOf), which is never
// counted, so that no stranger's guessing locks a member out, or carries no
// password, which cannot be a guess (the store refuses it as
// password_required without comparing anything), so that many people
// joining an open room from one address at once are not held back. A guess
// refused is answered 429 too_many_guesses, with Retry-After, and ok is
// false. Otherwise the caller hands done the store's answer to the join
// once it has it: ErrBadPassword counts as a failed guess.
func (s *Server) admitGuess(w http.ResponseWriter, r *http.Request, resume bool, room, password string) (done func(joinErr error), ok bool) {
	if resume || password == "" {
		return func(error) {}, true
	}
	guessed, wait := s.guesses.admit(room, s.clientIP(r), s.cfg.Now())
	if guessed == nil {
		s.metrics.guessesRefused.Inc()
		retry := retryAfterSeconds(wait)
		w.Header().Set("Retry-After", retry)
		fail(w, errorf(http.StatusTooManyRequests, "too_many_guesses", "too many wrong passwords for room %q; retry in %s s", room, retry))
		return nil, false
	}
	return func(joinErr error) {
		wrong := errors.Is(joinErr, store.ErrBadPassword)
		if wrong {
			s.metrics.guessesFailed.Inc()
		}
		guessed(wrong, s.cfg.Now())
	}, true
}

// resumeOf returns the member of room whose token is token, if any: a
// join with it is that member's resume.
func (s *Server) resumeOf(r *http.Request, token, room string) (store.Member, bool) {
	if token == "" {
		return store.Member{}, false
	}
	m, err := s.store.Authenticate(r.Context(), token)
	return m, err == nil && m.Room == room
}

// guessLimiter limits failed password guesses, so that nobody keeps the
// server's cores busy comparing bcrypt hashes (a wrong password costs one
// comparison, slow on purpose): at most perAddress failures per room and
// client address, and perRoom per room from every address, within a window
// that slides. Zero switches a limit off.
//
// A guess is admitted before the store compares anything, and takes a slot
// while it is in flight, so that guesses sent at once cannot overrun a
// limit; once answered it gives its slot back, unless it failed: then the
// failure holds the slot for the window.
type guessLimiter struct {
	perAddress int
	perRoom    int
	window     time.Duration

	mu    sync.Mutex
	rooms map[string]*guessCount
	addrs map[roomAddress]*guessCount
}

type roomAddress struct{ room, ip string }

// guessCount is the guesses of one room, or of one address in one room.
type guessCount struct {
	failures []time.Time // within the window, oldest first
	inFlight int
}

func newGuessLimiter(perAddress, perRoom int, window time.Duration) *guessLimiter {
	return &guessLimiter{perAddress: perAddress, perRoom: perRoom, window: window,
		rooms: map[string]*guessCount{}, addrs: map[roomAddress]*guessCount{}}
}

// admit asks for a guess at room's password from ip at now. When admitted,
// done must be called once the guess is answered, saying whether the
// password was wrong and when. When refused, done is nil and retryAfter is
// how long until a guess can be admitted again.
func (g *guessLimiter) admit(room, ip string, now time.Time) (done func(failed bool, at time.Time), retryAfter time.Duration) {
	if g.perAddress <= 0 && g.perRoom <= 0 {
		return func(bool, time.Time) {}, 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var counts []*guessCount
	if g.perRoom > 0 {
		counts = append(counts, countOf(g.rooms, room, now, g.window))
		if wait := counts[0].wait(g.perRoom, now, g.window); wait > 0 {
			return nil, wait
		}
	}
	if g.perAddress > 0 {
		c := countOf(g.addrs, roomAddress{room, ip}, now, g.window)
		if wait := c.wait(g.perAddress, now, g.window); wait > 0 {
			return nil, wait
		}
		counts = append(counts, c)
	}
	for _, c := range counts {
		c.inFlight++
	}
	var once sync.Once
	return func(failed bool, at time.Time) {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			for _, c := range counts {
				c.inFlight--
				if failed {
					i, _ := slices.BinarySearchFunc(c.failures, at, func(t, at time.Time) int { return t.Compare(at) })
					c.failures = slices.Insert(c.failures, i, at)
				}
			}
		})
	}, 0
}

// countOf is key's guessCount in m, made if need be, with the failures
// that left the window by now dropped.
func countOf[K comparable](m map[K]*guessCount, key K, now time.Time, window time.Duration) *guessCount {
	c := m[key]
	if c == nil {
		c = &guessCount{}
		m[key] = c
	}
	c.expire(now.Add(-window))
	return c
}

// expire drops the failures at or before cutoff.
func (c *guessCount) expire(cutoff time.Time) {
	n := 0
	for n < len(c.failures) && !c.failures[n].After(cutoff) {
		n++
	}
	c.failures = slices.Delete(c.failures, 0, n)
}

// wait is 0 when one more guess keeps c within limit, else how long until
// it would: until enough failures leave the window, or a second when only
// guesses in flight stand in the way.
func (c *guessCount) wait(limit int, now time.Time, window time.Duration) time.Duration {
	over := len(c.failures) + c.inFlight - limit // ≥ 0: this many slots must free, and one more
	if over < 0 {
		return 0
	}
	if over >= len(c.failures) {
		return time.Second
	}
	return max(c.failures[over].Add(window).Sub(now), time.Millisecond)
}

// sweep forgets the rooms and addresses with no guess in flight and no
// failure left in the window at now.
func (g *guessLimiter) sweep(now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	cutoff := now.Add(-g.window)
	for room, c := range g.rooms {
		if c.expire(cutoff); c.inFlight == 0 && len(c.failures) == 0 {
			delete(g.rooms, room)
		}
	}
	for key, c := range g.addrs {
		if c.expire(cutoff); c.inFlight == 0 && len(c.failures) == 0 {
			delete(g.addrs, key)
		}
	}
}

// retryAfterSeconds is a wait as a Retry-After value: whole seconds,
// rounded up, at least 1.
func retryAfterSeconds(wait time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(wait.Seconds()))))
}
