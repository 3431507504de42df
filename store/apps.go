package store

import (
	"context"
	"encoding/json"
	"strconv"
	"time"
)

// What an application in front of tincan sees and does through the store:
// its users' identities (from the join tokens it signs), the events it is
// told of (the webhook outbox) and what it may do to rooms (the admin
// operations). The methods are part of Store; this file groups their types
// and promises so that store.go stays the realtime core.

// Profile is what the application said of a member when it signed its
// join token: empty for a member that joined without one.
type Profile struct {
	Identity string          // the token's subject; "" without a token
	Name     string          // a display name; may be ""
	Metadata json.RawMessage // a JSON value, or nil
}

// MemberInfo is one member as the admin API shows it.
type MemberInfo struct {
	ID string
	Profile
	Joined time.Time // when it joined first (a resume keeps it)
	// Listening: an event stream or long-poll of the member is open now.
	// On a single node this is exact. A cluster engine may report what
	// the cluster knows (the member was seen listening within the client
	// timeout).
	Listening bool
}

// RoomInfo is one room as the admin API lists it.
type RoomInfo struct {
	Name       string
	Occupants  int
	Created    time.Time
	LastActive time.Time // the newest join, leave or message; Created at least
}

// ServerID is the sender of a message the application posts through the
// admin API: a Post whose From.ID is ServerID comes from the server, not
// from a member ("from":"server"). No client id is ever ServerID.
const ServerID = "server"

// The webhook event types.
const (
	EventRoomCreated  = "room.created"  // the room's first member joined
	EventMemberJoined = "member.joined" // a new member (not a resume)
	EventMemberLeft   = "member.left"   // Reason: left, timeout, kicked
	EventRoomClosed   = "room.closed"   // Reason: "empty" (the last member left) or "closed" (CloseRoom)
)

// Event is one webhook event held in the outbox until it is delivered.
type Event struct {
	// Seq is unique in the store, never reused, and increases within a
	// room in the order of the changes: the body's "seq", and (with a
	// prefix of the deliverer's) the webhook-id.
	Seq  uint64
	Room string
	Type string
	Time time.Time // when the change was made
	Body []byte    // the whole JSON body, the same on every delivery
}

// EventData is what an engine knows of a change to report it; EncodeEvent
// makes the body from it.
type EventData struct {
	Type      string
	Time      time.Time
	Room      string
	ClientID  string // "" for room events
	Profile          // the member's, when known
	Reason    string // member.left, room.closed
	Occupants int    // after the change
	Seq       uint64
}

// EncodeEvent is the body of a webhook event, as docs/api.md documents it:
// {"type","timestamp","data":{"room","client_id","identity","name",
// "metadata","reason","occupants","seq"}}, empty fields left out (never
// "occupants" nor "seq"). Both engines call it, so that a body does not
// depend on the engine.
func EncodeEvent(e EventData) []byte {
	type data struct {
		Room      string          `json:"room"`
		ClientID  string          `json:"client_id,omitempty"`
		Identity  string          `json:"identity,omitempty"`
		Name      string          `json:"name,omitempty"`
		Metadata  json.RawMessage `json:"metadata,omitempty"`
		Reason    string          `json:"reason,omitempty"`
		Occupants int             `json:"occupants"`
		Seq       uint64          `json:"seq"`
	}
	body, err := json.Marshal(struct {
		Type      string `json:"type"`
		Timestamp string `json:"timestamp"`
		Data      data   `json:"data"`
	}{e.Type, e.Time.UTC().Format(time.RFC3339Nano), data{
		e.Room, e.ClientID, e.Identity, e.Name, e.Metadata, e.Reason, e.Occupants, e.Seq,
	}})
	if err != nil { // only a Metadata that is not JSON, which Join refuses
		panic("store: event body: " + err.Error())
	}
	return body
}

// PeerJoinedFields are the fields of a peer-joined entry for member id with
// profile p, without braces: `"type":"peer-joined","peer":"…"` and, when
// set, "identity", "name" and "metadata", then `"resumed":true` for a
// resume. Both engines call it, so that the entry does not depend on the
// engine.
func PeerJoinedFields(id string, p Profile, resumed bool) []byte {
	b := []byte(`"type":"peer-joined","peer":`)
	b = strconv.AppendQuote(b, id)
	if p.Identity != "" {
		b = append(b, `,"identity":`...)
		b, _ = appendJSONString(b, p.Identity)
	}
	if p.Name != "" {
		b = append(b, `,"name":`...)
		b, _ = appendJSONString(b, p.Name)
	}
	if len(p.Metadata) > 0 {
		b = append(b, `,"metadata":`...)
		b = append(b, p.Metadata...)
	}
	if resumed {
		b = append(b, `,"resumed":true`...)
	}
	return b
}

func appendJSONString(b []byte, s string) ([]byte, error) {
	q, err := json.Marshal(s)
	return append(b, q...), err
}

// Apps is the part of Store an application uses: identities, the outbox
// and the admin operations. Store embeds it; every engine implements it.
type Apps interface {
	// Outbox returns up to limit undelivered events, oldest first within
	// each room. It is empty unless Options.Webhooks is set. Each event was
	// written in the same commit (transaction) as the change it reports:
	// there is no event for a change that did not happen, and no change
	// without its event, across crashes. An event stays until Delivered
	// removes it.
	Outbox(ctx context.Context, limit int) ([]Event, error)
	// Delivered removes events from the outbox. Removing one already gone
	// is not an error.
	Delivered(ctx context.Context, events []Event) error
	// OutboxChanged calls f after every commit that adds events to the
	// outbox. f must not block. cancel ends the subscription.
	OutboxChanged(f func()) (cancel func())
	// ClaimOutbox blocks until this process is the one that delivers the
	// outbox (at once on a single node; in a cluster, while no other
	// instance holds the claim) or ctx ends. lost is closed when the
	// claim is lost (an instance that cannot renew it); the claim of an
	// instance that dies passes to another within a few seconds. release
	// gives it up.
	ClaimOutbox(ctx context.Context) (lost <-chan struct{}, release func(), err error)

	// Rooms lists up to limit rooms whose names sort after after, in name
	// order.
	Rooms(ctx context.Context, after string, limit int) ([]RoomInfo, error)
	// Room describes one room and its members in join order.
	// Refusals: ErrNotFound (no such room).
	Room(ctx context.Context, room string) (RoomInfo, []MemberInfo, error)
	// Kick removes m as Leave with ReasonKicked would (the others get a
	// peer-left of reason kicked, the room is deleted when m was its last
	// member). Refusals: ErrNotFound (no such room or member).
	Kick(ctx context.Context, m Member) error
	// CloseRoom deletes room with all its members and messages, in one
	// change. The members get no peer-left. Refusals: ErrNotFound.
	//
	// After Kick or CloseRoom, Authenticate and Read for a removed member
	// (by its token, by its Member) answer ErrKicked or ErrRoomClosed in
	// place of ErrUnauthorized, on every instance, for at least the
	// client timeout (a restart may forget it: then ErrUnauthorized). Its
	// live readers are notified as for a Leave.
	CloseRoom(ctx context.Context, room string) error
}
