package handlers

import (
	"net/http"
	"net/url"
	"testing"
)

// FuzzQuery holds query to url.Values' Get on any raw query.
func FuzzQuery(f *testing.F) {
	for _, s := range [][2]string{
		{"since=5&wait=10", "since"}, {"since=5&since=6", "since"}, {"a=1&since", "since"}, {"since=", "since"},
		{"=5&since=2", "since"}, {"sinc%65=3", "since"}, {"since=1;x=2", "since"}, {"token=a+b", "token"},
		{"&&since=7&", "since"}, {"since=%zz", "since"}, {"", "since"}, {"wait=0.5", "wait"}, {"x=1&=&since=9", ""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, raw, key string) {
		r := &http.Request{URL: &url.URL{RawQuery: raw}}
		if got, want := query(r, key), r.URL.Query().Get(key); got != want {
			t.Fatalf("query(%q, %q) = %q, url.Values says %q", raw, key, got, want)
		}
	})
}
