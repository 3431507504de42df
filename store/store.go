// Package store is tincan's signaling state as the HTTP handlers see it: the
// domain types (rooms, members, messages), the Store interface that every
// storage engine implements, and the promises each of its methods makes.
//
// The interface lives here, in a package of its own that imports no engine,
// rather than in the handlers, because it has more than one user: the
// handlers call it, each engine implements it (boltstore: one bbolt file on
// one node), and the conformance suite in storetest proves an engine keeps
// every promise written below. main is the only place that picks an engine.
//
// Engines share two helpers from this package: Notifier (live readers learn
// of new entries) and Presence (which members are alive, in one process).
package store

import (
	"context"
	"time"
)

// Member identifies one member of one room.
type Member struct {
	Room string
	ID   string // the client id, unique within the room
}

// JoinRequest asks for a seat in Room. Token, if set, is the bearer token the
// request carried: when it belongs to a member of Room, that member resumes.
type JoinRequest struct {
	Room     string
	Password string
	Token    string
	// Profile is what the application's join token said of the joiner
	// (its Identity is the token's subject). A join whose Identity is that
	// of a member of Room resumes that member: same id and place, a fresh
	// token; the old token stops working and its readers are notified as
	// for a removal. Such a resume needs no password and is never
	// refused for a full room. Metadata, if any, is valid JSON.
	Profile Profile
}

// Joined is the outcome of a join.
type Joined struct {
	Member
	Token   string   // the secret; only here, never stored
	Resumed bool     // the request's token named an existing member: same id, same place
	Peers   []string // the other members, in join order
	// Profiles are the other members' profiles, in the order of Peers.
	Profiles []Profile
}

// Post is one or more messages from a member, stored together: all of
// them or none, in one commit, with ids increasing in their order.
type Post struct {
	From Member
	// IdempotencyKey covers the whole post ("" for none): a retry of the
	// post with the same key gets the same ids and stores nothing. A retry
	// repeats the post as it was.
	IdempotencyKey string
	Messages       []Draft // 1 to MaxPost
}

// MaxPost is the most messages one Post may carry.
const MaxPost = 64

// Draft is one message of a post.
type Draft struct {
	To string // a client id; "" for every other member
	// Fields are the members of the posted JSON object, without braces and
	// without "id" and "from", e.g. `"type":"offer","sdp":"v=0..."`.
	Fields []byte
}

// Appended is what Append did.
type Appended struct {
	ID  uint64   // the first message's id
	IDs []uint64 // every message's id, in the post's order (IDs[0] is ID)
	// Recipients are the members the messages went to, each once: nobody
	// for messages kept for the next joiner, or for a repeat.
	Recipients []string
	Repeat     bool // a repeated idempotency key: the first post's ids, nothing stored
}

// Message is one delivered entry: its id and the JSON object exactly as the
// client receives it ("id" first; "from" for a member's message, "type"
// peer-joined or peer-left for a server event).
type Message struct {
	ID   uint64
	Data []byte
}

// ReadRequest says what a Read returns.
type ReadRequest struct {
	After uint64 // only entries with a greater id
	Limit int    // at most this many
	// Acknowledge: the client says it holds everything up to After, so
	// that nothing up to there is delivered to the member again.
	Acknowledge bool
}

// Reason says why a member left.
type Reason string

const (
	ReasonLeft    Reason = "left"    // it said so
	ReasonTimeout Reason = "timeout" // it was silent for longer than the client timeout
	ReasonKicked  Reason = "kicked"  // the application removed it (Kick)
)

// Store is tincan's signaling state. Implementations are safe for concurrent
// use. A method that writes returns only once its change is durable: an
// answer without error means the change survives a crash of the process
// (and, for a replicated engine, of any minority of its machines).
//
// Refusals are *Error values of this package (errors.Is(err, ErrRoomFull)
// and so on); nothing was written when one is returned. Any other error is
// the engine's failure, not the client's.
//
// Ids: every entry (message or server event) gets an id greater than every
// id handed out before it in its room, across restarts; ids are never
// reused, not even after a room is deleted and made again. Ids need not be
// consecutive.
type Store interface {
	// Apps: identities, the webhook outbox, the admin operations (apps.go).
	Apps

	// Join admits a new member to req.Room, creating the room, or resumes
	// the member whose token req.Token is. A new member gets a fresh id and
	// token; a resumed one keeps its id and its place in join order. The
	// other members get a peer-joined event ("resumed":true for a resume;
	// PeerJoinedFields), and messages kept for the next joiner become the
	// new member's. With Options.Webhooks a new member's join writes a
	// member.joined event (after room.created for a new room) to the
	// outbox in the same commit; a resume writes none.
	// A resume needs no password. Refusals: ErrRoomFull (Capacity members
	// already), ErrPasswordRequired (the room has a password and
	// req.Password is empty), ErrBadPassword (the room has a password and
	// req.Password is another; a room's password is set by its first
	// member), ErrTooManyRooms.
	Join(ctx context.Context, req JoinRequest) (Joined, error)

	// Leave removes m and tells the others with a peer-left event of the
	// given reason; it deletes the room with all its messages when m was
	// the last member, and reports that. Leaving twice is not an error.
	// m's live readers are notified (a Read then answers ErrUnauthorized).
	// With Options.Webhooks it writes member.left (and room.closed, reason
	// "empty", when the room goes) in the same commit; so does a removal
	// for silence (reason timeout).
	Leave(ctx context.Context, m Member, reason Reason) (roomDeleted bool, err error)

	// Authenticate finds the member a token belongs to.
	// Refusals: ErrUnauthorized (unknown token, or the member left).
	Authenticate(ctx context.Context, token string) (Member, error)

	// Append stores the messages of p from p.From and returns their ids
	// once they are durable: all of them or, with an error, none. Each
	// message without To goes to every other current member or, when there
	// is none, to the next member who joins. A repeated idempotency key of
	// the same sender in the same room (within the message TTL) returns
	// the first post's ids, stores nothing and reports Repeat.
	// Refusals: ErrUnauthorized (the sender is gone), ErrUnknownPeer (a To
	// is not another member; the message names its place in the post),
	// ErrTooManyMessages (the post would take the room past its limit),
	// ErrBadPost (no messages, or more than MaxPost).
	// A post from ServerID needs no membership, only the room
	// (ErrNotFound); its entries have "from":"server".
	Append(ctx context.Context, p Post) (Appended, error)

	// Read returns up to q.Limit entries addressed to m with an id greater
	// than q.After, oldest first, without those older than the message TTL.
	// The cursor is where reading started: q.After, or m's acknowledged id
	// when that is larger (a member never again receives what it
	// acknowledged). With q.Acknowledge, m acknowledges q.After; the
	// acknowledgement holds for every later Read at once, and is made
	// durable within a short interval (a crash may lose that interval).
	// Refusals: ErrUnauthorized (m is not a member).
	Read(ctx context.Context, m Member, q ReadRequest) (msgs []Message, cursor uint64, err error)

	// Subscribe calls f after every change that concerns m: a new entry
	// for m, with its id as upto, or m's removal or a change of its token
	// (upto 0: a reader checks that its token still authenticates). When f is called
	// the change is visible to Read, so a reader that subscribes before it
	// reads misses nothing. f must not block: it is called on the engine's
	// delivery path. cancel ends the subscription; f is not called after
	// cancel returns.
	Subscribe(m Member, f func(upto uint64)) (cancel func())

	// Touch records a sign of life of m: a request it made.
	Touch(m Member)
	// Hold records that m is listening (an open event stream or long-poll)
	// until release is called. A member is never removed for silence while
	// it holds, nor within the client timeout after its last Touch or
	// release; past that the engine removes it once, as Leave with
	// ReasonTimeout would. After a restart every member gets the whole
	// client timeout again.
	Hold(m Member) (release func())

	// Occupants is the number of members of a room (0 for an unknown room).
	Occupants(ctx context.Context, room string) (int, error)
	// Capacity is the number of members a room admits.
	Capacity() int

	// Prune deletes what nobody will receive any more: entries that every
	// recipient acknowledged or left, entries older than the message TTL,
	// and idempotency keys older than the TTL. It returns the number of
	// entries deleted. Engines also prune on their own; calling it only
	// makes it happen now.
	Prune(ctx context.Context) (int, error)

	// Secret returns the secret stored under name, creating it with n
	// random bytes the first time: every caller, on every restart, gets
	// the same bytes.
	Secret(ctx context.Context, name string, n int) ([]byte, error)

	// Ping proves that the engine can make a change durable now.
	Ping(ctx context.Context) error

	// Close stops the engine's background work, makes pending
	// acknowledgements durable and releases its resources. Calls after
	// Close answer ErrClosed.
	Close() error
}

// Options are the rules every engine enforces. Zero values take the
// defaults noted (see Defaults).
type Options struct {
	Capacity        int           // members per room (default 2)
	MessageTTL      time.Duration // longest an entry is retained (default 10m)
	MaxRoomMessages int           // retained entries per room; 0 = unlimited
	MaxRooms        int           // rooms in total; 0 = unlimited
	ClientTimeout   time.Duration // silence after which a member is removed (default 60s)
	PruneEvery      time.Duration // how often the engine prunes (default 30s)
	Webhooks        bool          // write webhook events to the outbox (apps.go)
	Now             func() time.Time
}

// WithDefaults returns o with every zero value replaced by its default.
func (o Options) WithDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if o.Capacity == 0 {
		o.Capacity = 2
	}
	def(&o.MessageTTL, 10*time.Minute)
	def(&o.ClientTimeout, 60*time.Second)
	def(&o.PruneEvery, 30*time.Second)
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}
