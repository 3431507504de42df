package handlers

import (
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/tincan/tincan/store"
)

// The request limits. Everyone behind one NAT or corporate proxy shares an
// address, so an address is limited only in what it does without a
// member's token, and a member by its token:
//
//   - per client address, the calls that carry no member's token: joins
//     (other than a member's resume), room info, and calls whose token is
//     missing or unknown: a token bucket (RateLimit, RateBurst);
//   - per member, every call made with its token: a token bucket
//     (MemberRateLimit, MemberRateBurst), and its event streams and
//     long-polls open at once (MaxOpenPerMember: a tab, and its reconnect
//     in flight);
//   - per client address, the event streams and long-polls of all its
//     members together (MaxOpenPerIP): a ceiling far above what an office
//     holds, against one machine holding the server's every connection.
//
// Pages, static files, /healthz, /metrics and unknown paths are not
// counted: they are answered from memory, at the cost of a refusal. Over a
// limit the answer is 429 rate_limited with Retry-After. Zero switches a
// limit off.

// limiter is one kind of limit, per key (an address, a member): a token
// bucket of requests, and a cap on what is open at once. A member is its
// own key, not a string made of it: a string per call was an allocation
// per request (issue 20).
type limiter[K comparable] struct {
	rate    rate.Limit
	burst   int
	maxOpen int

	mu   sync.Mutex
	keys map[K]*limitState
}

type limitState struct {
	bucket *rate.Limiter
	open   int
	last   time.Time
}

// newLimiter is a limiter of perSecond requests, burst at once (at least
// one second's worth when not positive), and maxOpen open at once.
func newLimiter[K comparable](perSecond float64, burst, maxOpen int) *limiter[K] {
	if burst <= 0 {
		burst = max(1, int(math.Ceil(perSecond)))
	}
	return &limiter[K]{rate: rate.Limit(perSecond), burst: burst, maxOpen: maxOpen, keys: map[K]*limitState{}}
}

func (l *limiter[K]) state(key K, now time.Time) *limitState {
	st, ok := l.keys[key]
	if !ok {
		st = &limitState{bucket: rate.NewLimiter(l.rate, l.burst)}
		l.keys[key] = st
	}
	st.last = now
	return st
}

// allow takes one request from key's bucket; when it is empty it says how
// long to wait.
func (l *limiter[K]) allow(key K, now time.Time) (ok bool, retryAfter time.Duration) {
	if l.rate <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.state(key, now).bucket
	if b.AllowN(now, 1) {
		return true, 0
	}
	r := b.ReserveN(now, 1)
	defer r.CancelAt(now)
	return false, r.DelayFrom(now)
}

// open counts one more open thing of key until release is called; ok is
// false, and nothing counted, when key has maxOpen open already.
func (l *limiter[K]) open(key K, now time.Time) (release func(), ok bool) {
	if l.maxOpen <= 0 {
		return func() {}, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.state(key, now)
	if st.open >= l.maxOpen {
		return nil, false
	}
	st.open++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			st.open--
		})
	}, true
}

// sweep forgets the keys idle since before cutoff with nothing open.
func (l *limiter[K]) sweep(cutoff time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for key, st := range l.keys {
		if st.open == 0 && st.last.Before(cutoff) {
			delete(l.keys, key)
		}
	}
}

// clientIP is the peer address, or with TrustProxy the address the
// (trusted) proxy saw: the last entry of X-Forwarded-For, the one it added.
func (s *Server) clientIP(r *http.Request) string {
	if s.cfg.TrustProxy {
		if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
			entries := strings.Split(xff[len(xff)-1], ",")
			if ip := strings.TrimSpace(entries[len(entries)-1]); ip != "" {
				return ip
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// limitAddress counts a call without a member's token against its
// address: nil, or 429 rate_limited once the address has made too many.
func (s *Server) limitAddress(r *http.Request) error {
	if ok, wait := s.addresses.allow(s.clientIP(r), s.cfg.Now()); !ok {
		return rateLimited(wait, "too many calls without a member's token from your address")
	}
	return nil
}

// limitMember counts a call made with m's token against m: nil, or 429
// rate_limited once m has made too many.
func (s *Server) limitMember(m store.Member) error {
	if ok, wait := s.members.allow(m, s.cfg.Now()); !ok {
		return rateLimited(wait, "too many calls from this member")
	}
	return nil
}

// rateLimited is the 429 of a bucket that is empty for wait.
func rateLimited(wait time.Duration, what string) *apiError {
	return errorf(http.StatusTooManyRequests, "rate_limited", "%s; retry in %v", what, max(wait, time.Millisecond).Round(time.Millisecond)).retryIn(wait)
}

// openListener counts an event stream or long-poll of m, made from r's
// address, against m's cap and its address's until release is called; ok
// is false, and the 429 sent, when either cap is reached.
func (s *Server) openListener(w http.ResponseWriter, r *http.Request, m store.Member) (release func(), ok bool) {
	now := s.cfg.Now()
	releaseMember, ok := s.members.open(m, now)
	if !ok {
		fail(w, errorf(http.StatusTooManyRequests, "rate_limited",
			"this member has %d event streams and long-polls open already: end one first", s.members.maxOpen).retryIn(5*time.Second))
		return nil, false
	}
	releaseAddress, ok := s.addresses.open(s.clientIP(r), now)
	if !ok {
		releaseMember()
		fail(w, errorf(http.StatusTooManyRequests, "rate_limited",
			"too many open event streams and long-polls from your address (%d)", s.addresses.maxOpen).retryIn(5*time.Second))
		return nil, false
	}
	return func() { releaseAddress(); releaseMember() }, true
}
