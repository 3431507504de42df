package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
)

// JoinOptions say how to join; the zero value joins an open room as a new
// member.
type JoinOptions struct {
	// Password locks a new room, or opens a locked one.
	Password string
	// JoinToken is the application's JWT, for a server run with -auth jwt
	// (see MintJoinToken). A JoinToken whose subject is a member already
	// resumes that member with a fresh Token.
	JoinToken string
	// Token is a member's token from an earlier Join: the member resumes
	// with the same ClientID (answer 200) instead of taking a new seat. A
	// token that is no longer valid makes an ordinary new join. JoinToken
	// wins when both are set.
	Token string
}

// ICEServer is an entry of what RTCPeerConnection takes as iceServers.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// Peer is another member, as the join answer lists it.
type Peer struct {
	ClientID string `json:"client_id"`
	// Identity, Name and Metadata come from the peer's join token; empty
	// for a member that joined without one.
	Identity string          `json:"identity,omitempty"`
	Name     string          `json:"name,omitempty"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// Member is a seat in a room: what the join answered, and the calls a
// member makes. Its methods are safe for concurrent use.
type Member struct {
	Room     string `json:"room"`
	ClientID string `json:"client_id"`
	// Token is the member's secret: keep it to resume (JoinOptions.Token).
	Token string `json:"token"`
	// Initiator says that others were there first: this member makes the
	// offer to them (and is the polite peer towards each).
	Initiator bool `json:"initiator"`
	// Peers are the other members' ids, in join order; Members the same
	// members with what their join tokens said.
	Peers   []string `json:"peers"`
	Members []Peer   `json:"members"`
	// Capacity is the most members the room admits.
	Capacity   int         `json:"capacity"`
	ICEServers []ICEServer `json:"ice_servers"`
	// Identity, Name and Metadata are this member's own, from its join
	// token.
	Identity string          `json:"identity,omitempty"`
	Name     string          `json:"name,omitempty"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
	// Resumed says that the join resumed an existing member (answer 200).
	Resumed bool `json:"-"`

	c    *Client
	left atomic.Bool // Leave was called: streams that end are not reopened
}

// Join takes a seat in room, or resumes one (JoinOptions.Token,
// JoinOptions.JoinToken). Refusals are *Error: ErrRoomFull,
// ErrPasswordRequired, ErrBadPassword, ErrJWTRequired, ErrBadJWT… A join
// is retried only when the server answered that it did nothing (429, 503):
// after a network failure a retry could take a second seat, so the error is
// returned.
func (c *Client) Join(ctx context.Context, room string, opts JoinOptions) (*Member, error) {
	if err := checkRoom(room); err != nil {
		return nil, err
	}
	body := []byte("{}")
	if opts.Password != "" {
		body, _ = json.Marshal(map[string]string{"password": opts.Password})
	}
	bearer := opts.Token
	if opts.JoinToken != "" {
		bearer = opts.JoinToken
	}
	m := &Member{c: c}
	status, err := c.call(ctx, request{op: "join", method: "POST", path: "/rooms/" + room + "/join", bearer: bearer, body: body},
		nothingDone, m, http.StatusCreated, http.StatusOK)
	if err != nil {
		return nil, err
	}
	if m.ClientID == "" || m.Token == "" {
		return nil, fmt.Errorf("tincan: join: the answer has no client_id or token")
	}
	m.Resumed = status == http.StatusOK
	return m, nil
}

// Resume is Join with the member's token: the same member, a fresh answer
// (peers, ICE servers).
func (m *Member) Resume(ctx context.Context) (*Member, error) {
	return m.c.Join(ctx, m.Room, JoinOptions{Token: m.Token})
}

// SendOptions change one Send or SendBatch.
type SendOptions struct {
	// IdempotencyKey (at most 64 characters) makes a repeat of the same
	// call by this member answer the first call's ids and store nothing.
	// Empty: the client makes a fresh key for the call, so that its own
	// retries never store a message twice.
	IdempotencyKey string
	// NoIdempotencyKey sends the post without a key and tries it once:
	// for measuring what a key costs the server (tincan bench
	// -idempotency=false). A post whose answer is lost may then be
	// stored or not; do not use it otherwise.
	NoIdempotencyKey bool
}

// Send posts msg, anything that encodes to a JSON object with a "type"
// (and "to" to address one member), and returns its id once the server has
// made it durable. Network failures, 408, 429 and 5xx are retried with the
// same Idempotency-Key (honouring Retry-After) up to the client's retries.
// Refusals are *Error (ErrBadMessage, ErrUnknownPeer, ErrTooLarge…).
func (m *Member) Send(ctx context.Context, msg any, opts *SendOptions) (uint64, error) {
	var out struct {
		ID uint64 `json:"id"`
	}
	if err := m.post(ctx, "send", msg, opts, &out); err != nil {
		return 0, err
	}
	return out.ID, nil
}

// SendBatch posts 1 to 64 messages in one request: they are stored all or
// none and answered with their ids in order. A refused element is named by
// the *Error's Index.
func (m *Member) SendBatch(ctx context.Context, msgs []any, opts *SendOptions) ([]uint64, error) {
	var out struct {
		IDs []uint64 `json:"ids"`
	}
	if err := m.post(ctx, "send", msgs, opts, &out); err != nil {
		return nil, err
	}
	if len(out.IDs) != len(msgs) {
		return out.IDs, fmt.Errorf("tincan: send: %d ids for %d messages", len(out.IDs), len(msgs))
	}
	return out.IDs, nil
}

func (m *Member) post(ctx context.Context, op string, body any, opts *SendOptions, out any) error {
	data, err := encodeBody(body)
	if err != nil {
		return fmt.Errorf("tincan: %s: %w", op, err)
	}
	key, again := idempotencyKey(opts)
	_, err = m.c.call(ctx, request{op: op, method: "POST", path: "/rooms/" + m.Room + "/messages", bearer: m.Token, body: data, idemKey: key},
		again, out, http.StatusCreated)
	return err
}

// idempotencyKey is the key of a post with opts, and which failures it
// may be retried after: any, with a key; none, without.
func idempotencyKey(opts *SendOptions) (key string, again func(error) bool) {
	switch {
	case opts != nil && opts.NoIdempotencyKey:
		return "", func(error) bool { return false }
	case opts != nil && opts.IdempotencyKey != "":
		return opts.IdempotencyKey, anyFailure
	}
	return newKey(), anyFailure
}

// encodeBody is body's JSON; []byte and json.RawMessage are taken as JSON
// already.
func encodeBody(body any) ([]byte, error) {
	switch b := body.(type) {
	case json.RawMessage:
		return b, nil
	case []byte:
		return b, nil
	}
	return json.Marshal(body)
}

// Leave gives up the seat: the others receive peer-left, the member's
// streams end and its token stops working. Call it on hang-up; a member
// that only goes away is removed after the server's client timeout. A
// member already gone (ErrUnauthorized, ErrKicked, ErrRoomClosed) is not an
// error.
func (m *Member) Leave(ctx context.Context) error {
	m.left.Store(true)
	_, err := m.c.call(ctx, request{op: "leave", method: "POST", path: "/rooms/" + m.Room + "/leave", bearer: m.Token},
		anyFailure, nil, http.StatusNoContent)
	if errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrKicked) || errors.Is(err, ErrRoomClosed) {
		return nil
	}
	return err
}

// FetchICEServers returns fresh ICE servers (TURN credentials expire; fetch
// them before an ICE restart in a long call).
func (m *Member) FetchICEServers(ctx context.Context) ([]ICEServer, error) {
	var out struct {
		ICEServers []ICEServer `json:"ice_servers"`
	}
	if _, err := m.c.call(ctx, request{op: "ice-servers", method: "GET", path: "/ice-servers", bearer: m.Token},
		anyFailure, &out, http.StatusOK); err != nil {
		return nil, err
	}
	return out.ICEServers, nil
}

// Occupancy is what anyone may know of a room.
type Occupancy struct {
	Room      string `json:"room"`
	Occupants int    `json:"occupants"`
	Capacity  int    `json:"capacity"`
}

// Occupancy returns how many members room has and admits (an unknown room
// has none).
func (c *Client) Occupancy(ctx context.Context, room string) (Occupancy, error) {
	var out Occupancy
	if err := checkRoom(room); err != nil {
		return out, err
	}
	_, err := c.call(ctx, request{op: "room", method: "GET", path: "/rooms/" + room}, anyFailure, &out, http.StatusOK)
	return out, err
}
