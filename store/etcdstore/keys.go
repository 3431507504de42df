package etcdstore

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tincan/tincan/store"
)

// The key layout under the prefix P (Options.Prefix). Room names and
// client ids contain no '/' (the handlers check room names; client ids are
// base64url), so the parts split unambiguously.
//
//	P room/<room>/info                room record (JSON roomInfo); rewritten by every join and leave
//	P room/<room>/member/<id>         member record: token hash, claim window, join time, profile (memberValue)
//	P room/<room>/ack/<id>            highest id the member acknowledged, 20 decimal digits
//	P room/<room>/live/<id>           presence: attached to the member's lease ("shared": a restart's lease)
//	P room/<room>/msg/<name>          an entry: message or server event (msgValue); id from its revision
//	P room/<room>/idem/<id>/<key>     an idempotency key of member <id> (or "server"): its message's time and index
//	P room/<room>/seq                 rewritten (empty) by every transaction that posts to the room, with
//	                                  MaxRoomMessages: its version bounds what was posted since a count
//	P room/<room>/listen/<id>/<inst>  instance <inst> saw member <id> listening within the client timeout;
//	                                  on that instance's lease (admin's Listening)
//	P token/<hex sha256 of token>     "<room>/<id>": finds the member a token belongs to; or, after Kick
//	                                  or CloseRoom, a tombstone (tombValue) on a lease of the client timeout
//	P outbox/<room>/<name>            a webhook event not yet delivered (outboxValue); seq from its revision
//	P outbox-claim                    the instance that delivers the outbox, on that instance's claim lease
//	P slot/<n>                        "<room>": one of MaxRooms places, held by a room (only with MaxRooms)
//	P instance/<random id>            one running instance, attached to its own short lease
//	P secret/<name>                   a secret's bytes
//	P ping                            written by Ping
//
// Everything of a room is under one prefix, so that the last member's
// leave deletes it all with one range delete. The outbox is not: a room's
// events outlive it until they are delivered.
type layout struct{ prefix string }

func (l layout) room(room string) string          { return l.prefix + "room/" + room + "/" }
func (l layout) info(room string) string          { return l.room(room) + "info" }
func (l layout) member(room, id string) string    { return l.room(room) + "member/" + id }
func (l layout) ack(room, id string) string       { return l.room(room) + "ack/" + id }
func (l layout) live(room, id string) string      { return l.room(room) + "live/" + id }
func (l layout) msg(room, name string) string     { return l.room(room) + "msg/" + name }
func (l layout) idems(room, id string) string     { return l.room(room) + "idem/" + id + "/" }
func (l layout) seq(room string) string           { return l.room(room) + "seq" }
func (l layout) idem(room, id, key string) string { return l.idems(room, id) + key }
func (l layout) token(hash [32]byte) string       { return l.prefix + "token/" + hex.EncodeToString(hash[:]) }
func (l layout) listens(room, id string) string   { return l.room(room) + "listen/" + id + "/" }
func (l layout) listen(room, id, inst string) string {
	return l.listens(room, id) + inst
}
func (l layout) outbox(room, name string) string { return l.prefix + "outbox/" + room + "/" + name }
func (l layout) claim() string                   { return l.prefix + "outbox-claim" }
func (l layout) slot(n int) string               { return l.prefix + "slot/" + strconv.Itoa(n) }
func (l layout) instance(id string) string       { return l.prefix + "instance/" + id }
func (l layout) secret(name string) string       { return l.prefix + "secret/" + name }
func (l layout) ping() string                    { return l.prefix + "ping" }

// kind is what a key under the prefix holds.
type kind int

const (
	kindOther kind = iota // secrets, ping, anything unknown: not mirrored
	kindInfo
	kindMember
	kindAck
	kindLive
	kindMsg
	kindIdem
	kindToken
	kindSlot
	kindInstance
	kindListen
	kindOutbox
	kindSeq
)

// parsed is a key taken apart: room and id where the kind has them; rest is
// a message's name, an idempotency key, a token hash, a slot number or an
// instance id.
type parsed struct {
	kind     kind
	room, id string
	rest     string
}

func (l layout) parse(key []byte) parsed {
	k, ok := strings.CutPrefix(string(key), l.prefix)
	if !ok {
		return parsed{}
	}
	top, k, _ := strings.Cut(k, "/")
	switch top {
	case "token":
		return parsed{kind: kindToken, rest: k}
	case "slot":
		return parsed{kind: kindSlot, rest: k}
	case "instance":
		return parsed{kind: kindInstance, rest: k}
	case "outbox":
		room, name, _ := strings.Cut(k, "/")
		return parsed{kind: kindOutbox, room: room, rest: name}
	case "room":
	default:
		return parsed{}
	}
	room, k, _ := strings.Cut(k, "/")
	part, k, _ := strings.Cut(k, "/")
	switch part {
	case "info":
		return parsed{kind: kindInfo, room: room}
	case "seq":
		return parsed{kind: kindSeq, room: room}
	case "member":
		return parsed{kind: kindMember, room: room, id: k}
	case "ack":
		return parsed{kind: kindAck, room: room, id: k}
	case "live":
		return parsed{kind: kindLive, room: room, id: k}
	case "msg":
		return parsed{kind: kindMsg, room: room, rest: k}
	case "idem":
		id, key, _ := strings.Cut(k, "/")
		return parsed{kind: kindIdem, room: room, id: id, rest: key}
	case "listen":
		id, inst, _ := strings.Cut(k, "/")
		return parsed{kind: kindListen, room: room, id: id, rest: inst}
	}
	return parsed{}
}

// Ids come from etcd revisions: an entry created at revision R as the i-th
// entry of its transaction has id R*idsPerRevision + i. Revisions only grow,
// in the whole cluster, across restarts, and whatever keys are deleted, so
// ids are never reused, not even by a room made again under an old name.
// A batch of up to idsPerRevision entries in one transaction still gets
// increasing ids: a post of several messages, or a group of posts sent
// together (groupcommit.go), which takes at most idsPerRevision entries
// and leaves the rest to the next group. 64 stays enough for that: group
// commit's gain comes from the first few posts of a group (one fsync for
// many), and a group of 64 one-message posts is one of 64; changing the
// multiplier would change the id of every entry already stored and every
// acknowledgement already written, so it stays. At 2^53 / 64 revisions (JavaScript's exact integers) an
// etcd would have to commit 10,000 transactions a second for 400 years.
const idsPerRevision = 64

func entryID(rev int64, index int) uint64 { return uint64(rev)*idsPerRevision + uint64(index) }

// revisionOf is the revision of the transaction that made entry id.
func revisionOf(id uint64) int64 { return int64(id / idsPerRevision) }

// roomInfo is a room's record. Every join and every leave rewrites it, so
// its mod revision changes with the membership: a transaction that depends
// on who is in the room compares it.
type roomInfo struct {
	Password []byte `json:"pw,omitempty"` // bcrypt hash; empty: no password
	// LastJoin is the revision of the room's latest join; 0 means the
	// record's own mod revision (a join writes 0, since it cannot know its
	// own revision; a leave writes the number it read).
	LastJoin int64 `json:"lj,omitempty"`
	Slot     *int  `json:"slot,omitempty"` // the room's place among MaxRooms, if it holds one
	// Created is when the room was made, Active its latest join or
	// leave (unix nanoseconds, Options.Now; 0 in records from before).
	Created int64 `json:"ct,omitempty"`
	Active  int64 `json:"la,omitempty"`
}

func encodeInfo(info roomInfo) string {
	b, _ := json.Marshal(info) // a struct of plain fields: cannot fail
	return string(b)
}

func decodeInfo(v []byte) (roomInfo, error) {
	var info roomInfo
	err := json.Unmarshal(v, &info)
	return info, err
}

// memberValue is a member's record: the sha256 of its token (never the
// token), the revision after which the messages kept for the next joiner
// are its own (up to its own join), when it joined first and its profile.
//
//	token      32 bytes
//	claimFrom   8 bytes, big-endian
//	joined      8 bytes, unix nanoseconds, big-endian
//	profile     JSON {"i":identity,"n":name,"m":metadata}, empty members left out
//
// Records of 40 bytes (from before profiles) have neither time nor profile.
type memberValue struct {
	token     [32]byte
	claimFrom int64
	joined    int64
	profile   store.Profile
}

type profileJSON struct {
	Identity string          `json:"i,omitempty"`
	Name     string          `json:"n,omitempty"`
	Metadata json.RawMessage `json:"m,omitempty"`
}

func (m memberValue) encode() string {
	b := make([]byte, 0, 64)
	b = append(b, m.token[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(m.claimFrom))
	b = binary.BigEndian.AppendUint64(b, uint64(m.joined))
	p := m.profile
	if p.Identity != "" || p.Name != "" || len(p.Metadata) > 0 {
		j, err := json.Marshal(profileJSON{p.Identity, p.Name, p.Metadata})
		if err != nil { // only metadata that is not JSON, which Join refuses
			panic("etcdstore: member profile: " + err.Error())
		}
		b = append(b, j...)
	}
	return string(b)
}

func decodeMember(v []byte) (memberValue, bool) {
	if len(v) != 40 && len(v) < 48 {
		return memberValue{}, false
	}
	m := memberValue{token: [32]byte(v[:32]), claimFrom: int64(binary.BigEndian.Uint64(v[32:]))}
	if len(v) == 40 {
		return m, true
	}
	m.joined = int64(binary.BigEndian.Uint64(v[40:]))
	if rest := v[48:]; len(rest) > 0 {
		var p profileJSON
		if json.Unmarshal(rest, &p) != nil {
			return memberValue{}, false
		}
		m.profile = store.Profile{Identity: p.Identity, Name: p.Name, Metadata: p.Metadata}
	}
	return m, true
}

// ackValue is an acknowledged id in fixed width, so that etcd's byte-wise
// comparison of values orders acknowledgements as numbers.
func ackValue(id uint64) string { return fmt.Sprintf("%020d", id) }

func decodeAck(v []byte) uint64 {
	n, _ := strconv.ParseUint(string(v), 10, 64)
	return n
}

const sharedLease = "shared" // value of a live key on a restart's shared lease

// msgValue is an entry as stored:
//
//	created  8 bytes, unix nanoseconds, big-endian
//	index    1 byte, the entry's place in its transaction (< idsPerRevision)
//	flags    1 byte (flagKept: kept for the next member who joins)
//	n        2 bytes, number of recipients
//	n times  1 byte length + client id
//	tail     the delivered JSON object after its `{"id":N,` (id and braces
//	         are the reader's: the id is not known before the commit)
type msgValue struct {
	created    int64
	index      int
	kept       bool
	recipients []string
	tail       []byte
}

const flagKept = 1

var errBadValue = errors.New("corrupt entry")

func (m msgValue) encode() string {
	n := 13 + len(m.tail)
	for _, id := range m.recipients {
		n += 1 + len(id)
	}
	b := make([]byte, 0, n)
	b = binary.BigEndian.AppendUint64(b, uint64(m.created))
	var flags byte
	if m.kept {
		flags |= flagKept
	}
	b = append(b, byte(m.index), flags)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.recipients)))
	for _, id := range m.recipients {
		b = append(b, byte(len(id)))
		b = append(b, id...)
	}
	return string(append(b, m.tail...))
}

func decodeMsg(v []byte) (msgValue, error) {
	if len(v) < 12 {
		return msgValue{}, errBadValue
	}
	m := msgValue{created: int64(binary.BigEndian.Uint64(v)), index: int(v[8]), kept: v[9]&flagKept != 0}
	n := int(binary.BigEndian.Uint16(v[10:]))
	v = v[12:]
	m.recipients = make([]string, 0, n)
	for range n {
		if len(v) < 1 || len(v) < 1+int(v[0]) {
			return msgValue{}, errBadValue
		}
		m.recipients = append(m.recipients, string(v[1:1+v[0]]))
		v = v[1+v[0]:]
	}
	m.tail = v
	return m, nil
}

// deliver is the entry as a client receives it.
func deliver(id uint64, tail []byte) []byte {
	b := make([]byte, 0, 24+len(tail))
	b = append(b, `{"id":`...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, ',')
	return append(b, tail...)
}

// postTail and eventTail are the tails of a member's message and of a
// server event, byte for byte what the single-node engine delivers.
func postTail(from string, fields []byte) []byte {
	return fmt.Appendf(nil, `"from":%q,%s}`, from, fields)
}
func eventTail(fields []byte) []byte { return append(fields, '}') }

// idemValue is an idempotency key's record: when it was made, the index
// of its post's first message in the transaction, and, for a post of
// several, their number; the messages' revision is the key's own mod
// revision (both are written by one transaction).
func idemValue(created int64, index, n int) string {
	b := binary.BigEndian.AppendUint64(nil, uint64(created))
	b = append(b, byte(index))
	if n > 1 {
		b = append(b, byte(n))
	}
	return string(b)
}

func decodeIdem(v []byte) (created int64, index, n int, ok bool) {
	switch len(v) {
	case 9:
		return int64(binary.BigEndian.Uint64(v)), int(v[8]), 1, true
	case 10:
		return int64(binary.BigEndian.Uint64(v)), int(v[8]), int(v[9]), v[9] > 0
	}
	return 0, 0, 0, false
}

func parseHash(s string) ([32]byte, bool) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return [32]byte{}, false
	}
	return [32]byte(b), true
}

// tokenValue is a token key's value: the member the token belongs to.
func tokenValue(room, id string) string { return room + "/" + id }

// tombValue is a token key's value once its member was removed by the
// application: a 0 byte, 'k' (Kick) or 'c' (CloseRoom), then the member.
// Room names hold no 0 byte, so no token value starts with one.
func tombValue(kicked bool, room, id string) string {
	if kicked {
		return "\x00k" + tokenValue(room, id)
	}
	return "\x00c" + tokenValue(room, id)
}

// decodeTomb reads a tombstone: ok is false for a live token's value.
func decodeTomb(v []byte) (m store.Member, kicked, ok bool) {
	if len(v) < 2 || v[0] != 0 || (v[1] != 'k' && v[1] != 'c') {
		return store.Member{}, false, false
	}
	room, id, ok := splitMember(v[2:])
	return store.Member{Room: room, ID: id}, v[1] == 'k', ok
}

// outboxValue is an undelivered webhook event as stored: what EncodeEvent
// needs but its seq, which comes from the key's create revision and the
// event's index in its transaction (entryID), so that the body is made
// the same way on every instance and every delivery.
type outboxValue struct {
	Index     int             `json:"x"`
	Type      string          `json:"t"`
	Time      int64           `json:"at"` // unix nanoseconds
	ClientID  string          `json:"c,omitempty"`
	Identity  string          `json:"i,omitempty"`
	Name      string          `json:"n,omitempty"`
	Metadata  json.RawMessage `json:"m,omitempty"`
	Reason    string          `json:"r,omitempty"`
	Occupants int             `json:"o"`
}

func (o outboxValue) encode() string {
	b, err := json.Marshal(o)
	if err != nil {
		panic("etcdstore: outbox event: " + err.Error())
	}
	return string(b)
}

// event is the stored event as the outbox hands it out, created at rev.
func (o outboxValue) event(room string, rev int64) store.Event {
	seq := entryID(rev, o.Index)
	at := time.Unix(0, o.Time)
	return store.Event{Seq: seq, Room: room, Type: o.Type, Time: at, Body: store.EncodeEvent(store.EventData{
		Type: o.Type, Time: at, Room: room, ClientID: o.ClientID,
		Profile: store.Profile{Identity: o.Identity, Name: o.Name, Metadata: o.Metadata},
		Reason:  o.Reason, Occupants: o.Occupants, Seq: seq,
	})}
}

func decodeOutbox(v []byte) (outboxValue, bool) {
	var o outboxValue
	if json.Unmarshal(v, &o) != nil || o.Type == "" || o.Index < 0 || o.Index >= idsPerRevision {
		return outboxValue{}, false
	}
	return o, true
}

func splitMember(v []byte) (room, id string, ok bool) { return strings.Cut(string(v), "/") }

func parseSlot(s string) (int, bool) {
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 0
}
