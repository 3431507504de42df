package client

import (
	"context"
	"encoding/json"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Admin calls the admin API (/admin/v1/) of a server run with -admin-key,
// for the application's backend. Every change is durable before it
// returns. Unknown rooms and members are ErrNotFound; a wrong key is
// ErrUnauthorized.
type Admin struct {
	c   *Client
	key string
}

// Admin returns the admin API of the client's server, with key.
func (c *Client) Admin(key string) *Admin { return &Admin{c: c, key: key} }

// AdminRoom is a room as the admin API shows it.
type AdminRoom struct {
	Name       string    `json:"name"`
	Occupants  int       `json:"occupants"`
	Created    time.Time `json:"created"`
	LastActive time.Time `json:"last_active"`
	// Members, in join order, only from Admin.Room.
	Members []AdminMember `json:"members,omitempty"`
}

// AdminMember is a member as the admin API shows it.
type AdminMember struct {
	ClientID string          `json:"client_id"`
	Identity string          `json:"identity,omitempty"`
	Name     string          `json:"name,omitempty"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
	Joined   time.Time       `json:"joined"`
	// Listening: an event stream or long-poll is open (in cluster mode:
	// was, within the client timeout).
	Listening bool `json:"listening"`
}

// Rooms returns up to limit rooms (1 to 1000; 0: the server's 100) in name
// order after the name after ("" for the first page), and the after of the
// next page ("" on the last).
func (a *Admin) Rooms(ctx context.Context, after string, limit int) (rooms []AdminRoom, next string, err error) {
	q := url.Values{}
	if after != "" {
		q.Set("after", after)
	}
	if limit != 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	path := "/admin/v1/rooms"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out struct {
		Rooms []AdminRoom `json:"rooms"`
		Next  string      `json:"next"`
	}
	_, err = a.c.call(ctx, request{op: "admin rooms", method: "GET", path: path, bearer: a.key}, anyFailure, &out, http.StatusOK)
	return out.Rooms, out.Next, err
}

// AllRooms walks every room, a page at a time; an error ends it.
func (a *Admin) AllRooms(ctx context.Context) iter.Seq2[AdminRoom, error] {
	return func(yield func(AdminRoom, error) bool) {
		after := ""
		for {
			rooms, next, err := a.Rooms(ctx, after, 1000)
			if err != nil {
				yield(AdminRoom{}, err)
				return
			}
			for _, r := range rooms {
				if !yield(r, nil) {
					return
				}
			}
			if next == "" {
				return
			}
			after = next
		}
	}
}

// Room returns room with its members.
func (a *Admin) Room(ctx context.Context, room string) (AdminRoom, error) {
	var out AdminRoom
	if err := checkRoom(room); err != nil {
		return out, err
	}
	_, err := a.c.call(ctx, request{op: "admin room", method: "GET", path: "/admin/v1/rooms/" + room, bearer: a.key}, anyFailure, &out, http.StatusOK)
	return out, err
}

// CloseRoom closes room: its members get a room-closed frame, their tokens
// stop working, and the room and its messages are deleted.
func (a *Admin) CloseRoom(ctx context.Context, room string) error {
	if err := checkRoom(room); err != nil {
		return err
	}
	_, err := a.c.call(ctx, request{op: "admin close", method: "DELETE", path: "/admin/v1/rooms/" + room, bearer: a.key}, anyFailure, nil, http.StatusNoContent)
	return err
}

// Kick removes the member clientID from room: it gets a kicked frame, its
// token stops working, the others get peer-left with reason kicked.
func (a *Admin) Kick(ctx context.Context, room, clientID string) error {
	if err := checkRoom(room); err != nil {
		return err
	}
	_, err := a.c.call(ctx, request{op: "admin kick", method: "DELETE",
		path: "/admin/v1/rooms/" + room + "/members/" + url.PathEscape(clientID), bearer: a.key}, anyFailure, nil, http.StatusNoContent)
	return err
}

// Send posts msg into room from "server", to every member or to its "to",
// as Member.Send does (validated, durable, retried with one
// Idempotency-Key), and returns its id.
func (a *Admin) Send(ctx context.Context, room string, msg any, opts *SendOptions) (uint64, error) {
	if err := checkRoom(room); err != nil {
		return 0, err
	}
	data, err := encodeBody(msg)
	if err != nil {
		return 0, err
	}
	key, again := idempotencyKey(opts)
	var out struct {
		ID uint64 `json:"id"`
	}
	_, err = a.c.call(ctx, request{op: "admin send", method: "POST", path: "/admin/v1/rooms/" + room + "/messages",
		bearer: a.key, body: data, idemKey: key}, again, &out, http.StatusCreated)
	return out.ID, err
}
