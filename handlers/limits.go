package handlers

import (
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiter enforces the per-client-IP limits: a token bucket of requests, and
// a cap on event streams and long-polls open at once. Zero values switch a
// limit off.
type limiter struct {
	rate       rate.Limit
	burst      int
	maxOpen    int
	trustProxy bool

	mu  sync.Mutex
	ips map[string]*ipState
}

type ipState struct {
	bucket *rate.Limiter
	open   int
	last   time.Time
}

func newLimiter(perSecond float64, burst, maxOpen int, trustProxy bool) *limiter {
	if burst <= 0 {
		burst = max(1, int(math.Ceil(perSecond)))
	}
	return &limiter{rate: rate.Limit(perSecond), burst: burst, maxOpen: maxOpen, trustProxy: trustProxy, ips: map[string]*ipState{}}
}

// clientIP is the peer address, or with -trust-proxy the address the
// (trusted) proxy saw: the last entry of X-Forwarded-For, the one it added.
func (l *limiter) clientIP(r *http.Request) string {
	if l.trustProxy {
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

func (l *limiter) state(ip string, now time.Time) *ipState {
	st, ok := l.ips[ip]
	if !ok {
		st = &ipState{bucket: rate.NewLimiter(l.rate, l.burst)}
		l.ips[ip] = st
	}
	st.last = now
	return st
}

// allow takes one request from ip's bucket; when empty it says how long to
// wait.
func (l *limiter) allow(ip string, now time.Time) (ok bool, retryAfter time.Duration) {
	if l.rate <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.state(ip, now).bucket
	if b.AllowN(now, 1) {
		return true, 0
	}
	r := b.ReserveN(now, 1)
	defer r.CancelAt(now)
	return false, r.DelayFrom(now)
}

// open counts a stream or long-poll of ip until release is called.
func (l *limiter) open(ip string, now time.Time) (release func(), ok bool) {
	if l.maxOpen <= 0 {
		return func() {}, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.state(ip, now)
	if st.open >= l.maxOpen {
		return nil, false
	}
	st.open++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		st.open--
	}, true
}

// sweep forgets addresses idle since before cutoff with nothing open.
func (l *limiter) sweep(cutoff time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ip, st := range l.ips {
		if st.open == 0 && st.last.Before(cutoff) {
			delete(l.ips, ip)
		}
	}
}

// limitRequests answers 429 rate_limited to a client over its request rate.
// Health checks and metrics scrapes are not counted.
func (s *Server) limitRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" && r.URL.Path != "/metrics" {
			if ok, wait := s.limits.allow(s.limits.clientIP(r), s.cfg.Now()); !ok {
				w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
				fail(w, errorf(http.StatusTooManyRequests, "rate_limited", "too many requests from your address; retry in %v", wait.Round(time.Millisecond)))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// openListener counts an event stream or long-poll against its address's
// cap; ok is false (and the answer sent) when the cap is reached.
func (s *Server) openListener(w http.ResponseWriter, r *http.Request) (release func(), ok bool) {
	release, ok = s.limits.open(s.limits.clientIP(r), s.cfg.Now())
	if !ok {
		w.Header().Set("Retry-After", "5")
		fail(w, errorf(http.StatusTooManyRequests, "rate_limited", "too many open streams and long-polls from your address (%d)", s.limits.maxOpen))
	}
	return release, ok
}
