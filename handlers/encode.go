package handlers

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/tincan/tincan/store"
)

// problem is an RFC 9457 problem detail with the API's extra "code" member.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Code   string `json:"code"`
	Detail string `json:"detail,omitempty"`
	Index  *int   `json:"index,omitempty"` // a batch post's refused element, from 0
}

// apiError is a refusal on its way to the client.
type apiError struct {
	status     int
	code       string
	detail     string
	cause      error         // what the log says instead of detail; nil: detail says it
	retryAfter time.Duration // the answer's Retry-After, in whole seconds rounded up; 0: none of its own
	index      *int          // the refused element of a batch post; nil: none
}

func (e *apiError) Error() string { return e.detail }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, detail: fmt.Sprintf(format, args...)}
}

// because sets the cause that the request's log line gives for e, which
// the client is not shown.
func (e *apiError) because(cause error) *apiError {
	e.cause = cause
	return e
}

// retryIn sets the Retry-After that the answer of e carries.
func (e *apiError) retryIn(wait time.Duration) *apiError {
	e.retryAfter = wait
	return e
}

// statusOf maps the store's refusal codes to HTTP statuses.
var statusOf = map[string]int{
	"unauthorized":      http.StatusUnauthorized,
	"kicked":            http.StatusUnauthorized,
	"room_closed":       http.StatusUnauthorized,
	"not_found":         http.StatusNotFound,
	"not_member":        http.StatusForbidden,
	"bad_password":      http.StatusForbidden,
	"password_required": http.StatusForbidden,
	"bad_message":       http.StatusBadRequest,
	"room_full":         http.StatusConflict,
	"unknown_peer":      http.StatusNotFound,
	"too_many_messages": http.StatusTooManyRequests,
	"too_many_rooms":    http.StatusServiceUnavailable,
	"shutting_down":     http.StatusServiceUnavailable,
	"unavailable":       http.StatusServiceUnavailable,
}

// encode writes v as a JSON answer.
func encode(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		recordCause(w, err)
		data = []byte(`{}`)
		status = http.StatusInternalServerError
	}
	writeJSON(w, status, "application/json", data)
}

// Header values, shared by every answer (net/http only reads them).
var (
	noStore         = []string{"no-store"}
	jsonType        = []string{"application/json"}
	problemJSONType = []string{"application/problem+json"}
)

func writeJSON(w http.ResponseWriter, status int, contentType string, data []byte) {
	setJSONHeader(w.Header(), contentType)
	w.WriteHeader(status)
	w.Write(data)
	w.Write([]byte("\n"))
}

// setJSONHeader sets the header of a JSON answer of contentType.
func setJSONHeader(h http.Header, contentType string) {
	switch contentType {
	case "application/json":
		h["Content-Type"] = jsonType
	case "application/problem+json":
		h["Content-Type"] = problemJSONType
	default:
		h.Set("Content-Type", contentType)
	}
	h["Cache-Control"] = noStore
}

// fail answers err as problem+json: refusals with their own status and code,
// anything else as a 500 internal, whose detail is never shown. For every
// 5xx it records the cause (err, or the apiError's own cause) for the
// request's log line, which the middleware writes.
func fail(w http.ResponseWriter, err error) {
	p := problem{Type: "about:blank", Status: http.StatusInternalServerError, Code: "internal"}
	cause := err
	var ae *apiError
	var se *store.Error
	switch {
	case errors.As(err, &ae):
		p.Status, p.Code, p.Detail, p.Index = ae.status, ae.code, ae.detail, ae.index
		if ae.cause != nil {
			cause = ae.cause
		}
		if ae.retryAfter > 0 {
			w.Header().Set("Retry-After", retryAfterSeconds(ae.retryAfter))
		}
	case errors.As(err, &se) && statusOf[se.Code] != 0:
		p.Status, p.Code, p.Detail, p.Index = statusOf[se.Code], se.Code, se.Msg, se.Index
	default:
		p.Detail = "internal error"
	}
	if p.Status >= 500 {
		recordCause(w, cause)
	}
	p.Title = http.StatusText(p.Status)
	if (p.Status == http.StatusTooManyRequests || p.Status == http.StatusServiceUnavailable) && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "1")
	}
	data, _ := json.Marshal(p)
	writeJSON(w, p.Status, "application/problem+json", data)
}
