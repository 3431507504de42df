package etcdstore

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tincan/tincan/store"
	"github.com/tincan/tincan/store/boltstore"
)

// The etcd engine delivers, byte for byte, what the bbolt engine delivers
// for the same requests; only the ids and client ids differ.
func TestDeliveredAsBoltstore(t *testing.T) {
	t.Parallel()
	bolt, err := boltstore.Open(filepath.Join(t.TempDir(), "parity.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	etcd := openN(t, 1, store.Options{})[0]
	fromBolt, fromEtcd := script(t, bolt), script(t, etcd)
	if len(fromBolt) != 6 {
		t.Fatalf("bbolt delivers %q, want six entries", fromBolt)
	}
	if !slices.Equal(fromBolt, fromEtcd) {
		t.Fatalf("the engines deliver differently:\nbbolt %q\netcd  %q", fromBolt, fromEtcd)
	}
}

// script plays one conversation and returns what its members read, with
// ids written # and client ids A and B.
func script(t *testing.T, s store.Store) []string {
	t.Helper()
	join := func(req store.JoinRequest) store.Joined {
		j, err := s.Join(ctx0, req)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	post := func(p store.Post) {
		if _, err := s.Append(ctx0, p); err != nil {
			t.Fatal(err)
		}
	}
	a := join(store.JoinRequest{Room: "r"})
	post(store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(`"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1","n":[1.50,{"x":null}],"u":"\u00e9\u2028"`)}}})
	b := join(store.JoinRequest{Room: "r"})
	post(store.Post{From: b.Member, IdempotencyKey: "k", Messages: []store.Draft{{To: a.ID, Fields: []byte(`"type":"answer","sdp":"v=0"`)}}})
	post(store.Post{From: b.Member, IdempotencyKey: "k", Messages: []store.Draft{{To: a.ID, Fields: []byte(`"type":"answer","sdp":"v=0"`)}}})
	post(store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(`"type":"candidate","candidate":null`)}}})
	join(store.JoinRequest{Room: "r", Token: a.Token})
	var out []string
	for _, m := range []store.Member{a.Member, b.Member} {
		msgs, _, err := s.Read(ctx0, m, store.ReadRequest{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		for _, msg := range msgs {
			out = append(out, fmt.Sprintf("%s reads %s", m.ID, msg.Data))
		}
	}
	if _, err := s.Leave(ctx0, b.Member, store.ReasonLeft); err != nil {
		t.Fatal(err)
	}
	msgs, _, err := s.Read(ctx0, a.Member, store.ReadRequest{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, fmt.Sprintf("%s reads %s", a.ID, msgs[len(msgs)-1].Data))
	ids := regexp.MustCompile(`"id":[0-9]+,`)
	for i := range out {
		out[i] = strings.NewReplacer(a.ID, "A", b.ID, "B").Replace(ids.ReplaceAllString(out[i], `"id":#,`))
	}
	return out
}
