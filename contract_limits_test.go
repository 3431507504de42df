package main

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
)

func TestRateLimit(t *testing.T) {
	srv := newTestServer(t, withFlags("-rate-limit", "1", "-rate-burst", "5"))
	var limited answer
	for i := range 20 {
		a := srv.do(t, "GET", "/rooms/r", "")
		if a.Status == 429 {
			limited = a
			if i < 5 {
				t.Fatalf("limited after %d requests, burst is 5", i)
			}
			break
		}
	}
	if limited.Status != 429 || limited.problem(t) != "rate_limited" {
		t.Fatal("20 requests at once were not limited")
	}
	if s, err := strconv.Atoi(limited.Header.Get("Retry-After")); err != nil || s < 1 {
		t.Fatalf("Retry-After %q", limited.Header.Get("Retry-After"))
	}
	// Health checks are not counted.
	if a := srv.do(t, "GET", "/healthz", ""); a.Status != 200 {
		t.Fatalf("healthz limited: %d", a.Status)
	}
}

func TestTrustProxy(t *testing.T) {
	for _, trust := range []bool{false, true} {
		t.Run(fmt.Sprint("trust=", trust), func(t *testing.T) {
			srv := newTestServer(t, withFlags("-rate-limit", "1", "-rate-burst", "2", fmt.Sprint("-trust-proxy=", trust)))
			limitedAt := func(ip string) int {
				for i := range 10 {
					if a := srv.do(t, "GET", "/rooms/r", "", "X-Forwarded-For", "198.51.100.1, "+ip); a.Status == 429 {
						return i
					}
				}
				return -1
			}
			first, second := limitedAt("192.0.2.1"), limitedAt("192.0.2.2")
			if first != 2 {
				t.Fatalf("first address limited at %d, want 2", first)
			}
			// Trusted, each forwarded address has its own bucket; untrusted,
			// the header is ignored and the loopback bucket is empty.
			if want := map[bool]int{true: 2, false: 0}[trust]; second != want {
				t.Fatalf("second address limited at %d, want %d", second, want)
			}
		})
	}
}

func TestMaxStreamsPerIP(t *testing.T) {
	srv := newTestServer(t, withFlags("-max-streams-per-ip", "2"))
	a := srv.join(t, "s", 201)
	a.events(t, "").ready(t)
	a.events(t, "").ready(t)
	ans := srv.do(t, "GET", "/rooms/s/messages?wait=0&token="+a.Token, "")
	if ans.Status != 429 || ans.problem(t) != "rate_limited" {
		t.Fatalf("third listener: %d %s", ans.Status, ans.Body)
	}
}

func TestMaxRooms(t *testing.T) {
	srv := newTestServer(t, withFlags("-max-rooms", "2"))
	a := srv.join(t, "one", 201)
	srv.join(t, "two", 201)
	ans := srv.do(t, "POST", "/rooms/three/join", "")
	if ans.Status != http.StatusServiceUnavailable || ans.problem(t) != "too_many_rooms" {
		t.Fatalf("third room: %d %s", ans.Status, ans.Body)
	}
	srv.join(t, "one", 201) // joining an existing room is fine
	a.leave(t)
	srv.join(t, "one", 201)
}
