package store

import "fmt"

// Error is a refusal of the store: the request was understood and broke a
// rule, and nothing was written. Code is a stable machine-readable word (the
// API's problem codes reuse it); the message says what happened.
type Error struct {
	Code  string
	Msg   string
	Index *int // for a refusal of one message of a post: its place, from 0
}

func (e *Error) Error() string { return e.Msg }

// Is makes errors.Is(err, store.ErrRoomFull) match any *Error of that code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// The refusals, for errors.Is.
var (
	ErrUnauthorized     = &Error{Code: "unauthorized", Msg: "unknown or expired token"}
	ErrNotMember        = &Error{Code: "not_member", Msg: "token belongs to another room"}
	ErrRoomFull         = &Error{Code: "room_full", Msg: "room is full"}
	ErrBadPassword      = &Error{Code: "bad_password", Msg: "wrong room password"}
	ErrPasswordRequired = &Error{Code: "password_required", Msg: "the room needs a password"}
	ErrUnknownPeer      = &Error{Code: "unknown_peer", Msg: "no such peer in this room"}
	ErrTooManyMessages  = &Error{Code: "too_many_messages", Msg: "room holds too many messages"}
	ErrTooManyRooms     = &Error{Code: "too_many_rooms", Msg: "the server holds too many rooms"}
	ErrBadPost          = &Error{Code: "bad_message", Msg: "a post carries 1 to 64 messages"}
	ErrClosed           = &Error{Code: "shutting_down", Msg: "store is closed"}
	ErrNotFound         = &Error{Code: "not_found", Msg: "no such room or member"}
	ErrKicked           = &Error{Code: "kicked", Msg: "the member was removed by the application"}
	ErrRoomClosed       = &Error{Code: "room_closed", Msg: "the room was closed by the application"}
	// ErrUnavailable: the engine cannot reach a quorum of its storage now.
	// Unlike the refusals above it does not say that nothing was written:
	// a write may have happened, so a client retries with the same
	// Idempotency-Key.
	ErrUnavailable = &Error{Code: "unavailable", Msg: "storage is unavailable"}
)

// RefuseMessage is a refusal of base's kind about message index of a post.
func RefuseMessage(base *Error, index int, format string, args ...any) *Error {
	e := Refusef(base, format, args...)
	e.Index = &index
	return e
}

// Refusef is a refusal of base's kind with its own message.
func Refusef(base *Error, format string, args ...any) *Error {
	return &Error{Code: base.Code, Msg: fmt.Sprintf(format, args...)}
}
