package client

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Error is a refusal by the server: an answer of status 4xx or 5xx, with
// the code of its application/problem+json body. Compare it with the
// sentinels below using errors.Is, which matches on Code:
//
//	if errors.Is(err, client.ErrRoomFull) { … }
type Error struct {
	// Op is what the client was doing: "join", "send", "receive", "leave",
	// "ice-servers", "room", or "admin …".
	Op string
	// Status is the HTTP status code.
	Status int
	// Code is the problem's stable code ("room_full"); for an answer that
	// is not problem+json (a proxy's 502), "http_" and the status.
	Code string
	// Detail is the problem's text for people; it may change.
	Detail string
	// Index is the refused element of a batch, -1 when none is named.
	Index int
	// RetryAfter is the Retry-After of a 429 or 503, zero when absent.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	s := fmt.Sprintf("tincan: %s: %d %s", e.Op, e.Status, e.Code)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Is reports whether target is an *Error with the same Code (the
// sentinels carry a Code only).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// The server's problem codes (docs/api.md, "Errors"), for errors.Is.
var (
	ErrBadRoomName      = &Error{Code: "bad_room_name"}
	ErrBadJSON          = &Error{Code: "bad_json"}
	ErrBadMessage       = &Error{Code: "bad_message"}
	ErrBadRequest       = &Error{Code: "bad_request"}
	ErrUnauthorized     = &Error{Code: "unauthorized"}
	ErrJWTRequired      = &Error{Code: "jwt_required"}
	ErrBadJWT           = &Error{Code: "bad_jwt"}
	ErrKicked           = &Error{Code: "kicked"}
	ErrRoomClosed       = &Error{Code: "room_closed"}
	ErrNotMember        = &Error{Code: "not_member"}
	ErrPasswordRequired = &Error{Code: "password_required"}
	ErrBadPassword      = &Error{Code: "bad_password"}
	ErrUnknownPeer      = &Error{Code: "unknown_peer"}
	ErrNotFound         = &Error{Code: "not_found"}
	ErrRoomFull         = &Error{Code: "room_full"}
	ErrTooLarge         = &Error{Code: "too_large"}
	ErrRateLimited      = &Error{Code: "rate_limited"}
	ErrTooManyMessages  = &Error{Code: "too_many_messages"}
	ErrTooManyGuesses   = &Error{Code: "too_many_guesses"}
	ErrShuttingDown     = &Error{Code: "shutting_down"}
	ErrTooManyRooms     = &Error{Code: "too_many_rooms"}
	ErrUnavailable      = &Error{Code: "unavailable"}
)

// maxProblem bounds how much of an error answer is read.
const maxProblem = 64 << 10

// problemOf reads the refusal resp into an *Error. It reads and closes
// nothing else: the caller closes the body.
func problemOf(op string, resp *http.Response) *Error {
	e := &Error{Op: op, Status: resp.StatusCode, Index: -1}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxProblem))
	var p struct {
		Code   string `json:"code"`
		Detail string `json:"detail"`
		Index  *int   `json:"index"`
	}
	if json.Unmarshal(body, &p) == nil && p.Code != "" {
		e.Code, e.Detail = p.Code, p.Detail
		if p.Index != nil {
			e.Index = *p.Index
		}
	} else {
		e.Code = "http_" + strconv.Itoa(resp.StatusCode)
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return e
}

// retriable says whether a request refused with status did nothing that a
// retry could repeat, and may work later: 408 (the body did not arrive),
// 429, and 5xx (502 and 504 from a proxy, 503 from the server).
func retriable(status int) bool {
	return status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500
}
