package handlers

import (
	"net/http"
	"strings"
)

// query returns the first value of the query parameter key, as
// r.URL.Query().Get(key) does. A query that holds no escapes ('%', '+') and
// no ';' (which url.ParseQuery refuses) is read in place, without the map
// and slices url.Values costs: it serves issue 20's target (fewer
// allocations per long-poll, whose every request reads since and wait).
// Any other query goes through url.ParseQuery. FuzzQuery holds the two to
// the same answers.
func query(r *http.Request, key string) string {
	raw := r.URL.RawQuery
	if strings.ContainsAny(raw, "%+;") {
		return r.URL.Query().Get(key)
	}
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(pair, "=")
		if k == key && pair != "" {
			return v
		}
	}
	return ""
}
