package boltstore

import (
	"encoding/json"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/tincan/tincan/store"
)

// A member record round-trips its profile and join time; one without
// either keeps the 48-byte form of files from before profiles.
func TestMemberRecordForms(t *testing.T) {
	p := store.Profile{Identity: "ali\x00ce", Name: "Ünal", Metadata: json.RawMessage(`{"a":[1,2]}`)}
	rec := memberRecord{Token: make([]byte, 32), Join: 3, Acked: 9, Joined: 12345, ext: profileBytes(p)}
	got, ok := decodeMember(rec.encode())
	if !ok || got.Join != 3 || got.Acked != 9 || got.Joined != 12345 || got.profile().Identity != p.Identity ||
		got.profile().Name != p.Name || string(got.profile().Metadata) != string(p.Metadata) || string(got.identity()) != p.Identity {
		t.Fatalf("round trip: %+v, %v; profile %+v", got, ok, got.profile())
	}
	old := memberRecord{Token: make([]byte, 32), Join: 1, Acked: 2}
	if b := old.encode(); len(b) != oldMemberLen {
		t.Fatalf("a record without profile or join time is %d bytes, want %d", len(b), oldMemberLen)
	}
	for _, n := range []int{0, 47, 49, 55} {
		if _, ok := decodeMember(make([]byte, n)); ok {
			t.Fatalf("a record of %d bytes decodes", n)
		}
	}
}

// A file whose member records are the old 48 bytes still opens: the
// members authenticate, read, acknowledge (the record keeps its form) and
// are listed with no profile and an unknown join time.
func TestOldMemberRecordsLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, b := mustJoin(t, s, "r"), mustJoin(t, s, "r")
	id := mustAppend(t, s, a.Member, `"type":"x"`)
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		members := tx.Bucket(bucketRooms).Bucket([]byte("r")).Bucket(bucketMembers)
		for _, m := range []store.Member{a.Member, b.Member} {
			if err := members.Put([]byte(m.ID), clone(members.Get([]byte(m.ID))[:oldMemberLen])); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	s = open(t, path, Options{})
	if m, err := s.Authenticate(ctx0, b.Token); err != nil || m != b.Member {
		t.Fatalf("authenticate an old record's member: %+v, %v", m, err)
	}
	msgs, _, err := s.Read(ctx0, b.Member, store.ReadRequest{Limit: 10, After: id, Acknowledge: true})
	if err != nil || len(msgs) != 0 {
		t.Fatalf("read by an old record's member: %v, %v", msgs, err)
	}
	if err := s.flushAcks(ctx0); err != nil {
		t.Fatal(err)
	}
	s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRooms).Bucket([]byte("r")).Bucket(bucketMembers).Get([]byte(b.ID))
		if rec, ok := decodeMember(v); len(v) != oldMemberLen || !ok || rec.Acked != id {
			t.Fatalf("b's record after an acknowledgement: %d bytes, %+v", len(v), rec)
		}
		return nil
	})
	_, members, err := s.Room(ctx0, "r")
	if err != nil || len(members) != 2 || members[0].ID != a.ID || !members[0].Joined.IsZero() || members[0].Identity != "" {
		t.Fatalf("room of old records: %+v, %v", members, err)
	}
	// No identity: a join with one is a new member (the room is full).
	if _, err := s.Join(ctx0, store.JoinRequest{Room: "r", Profile: store.Profile{Identity: "x"}}); err == nil {
		t.Fatal("a join with an identity resumed a member of an old record")
	}
}

// Metadata that is not JSON is refused; JSON metadata is stored compact.
func TestJoinMetadata(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "meta.db"), Options{})
	if _, err := s.Join(ctx0, store.JoinRequest{Room: "r", Profile: store.Profile{Metadata: json.RawMessage(`{"a":`)}}); err == nil {
		t.Fatal("metadata that is not JSON admitted")
	}
	mustJoin(t, s, "r")
	j, err := s.Join(ctx0, store.JoinRequest{Room: "r", Profile: store.Profile{Identity: "i", Metadata: json.RawMessage("{\n  \"a\": 1\n}")}})
	if err != nil {
		t.Fatal(err)
	}
	_, members, err := s.Room(ctx0, "r")
	if err != nil || len(members) != 2 || members[1].ID != j.ID || string(members[1].Metadata) != `{"a":1}` {
		t.Fatalf("room: %+v, %v; want the second member's metadata compact", members, err)
	}
}
