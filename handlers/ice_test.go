package handlers

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tincan/tincan/store/boltstore"
	"github.com/tincan/tincan/turn"
)

// iceList decodes the "ice_servers" of an answer, keeping each entry's
// members as they are on the wire.
func iceList(t *testing.T, ans answer) []map[string]json.RawMessage {
	t.Helper()
	var a struct {
		ICEServers []map[string]json.RawMessage `json:"ice_servers"`
	}
	if err := json.Unmarshal(ans.body, &a); err != nil {
		t.Fatalf("%v in %s", err, ans.body)
	}
	return a.ICEServers
}

// The join answer and GET /ice-servers carry the contract's ice_servers:
// the stun: entry with only "urls", the turn: entry with "urls",
// "username" and "credential", the username naming the client.
func TestICEServersShape(t *testing.T) {
	creds := turn.Credentials{
		Secret: []byte("secret"),
		URLs:   turn.EmbeddedURLs("127.0.0.1", 3478),
		Now:    func() time.Time { return time.Unix(1700000000, 0) },
	}
	a := newTestAPI(t, Config{ICEServers: creds.ICEServers}, boltstore.Options{})
	m := a.join("ice")
	joinAnswer := a.do("POST", "/rooms/ice/join", m.token, "") // a resume answers 200 with the list again
	if joinAnswer.status != http.StatusOK {
		t.Fatalf("resume: %d %s", joinAnswer.status, joinAnswer.body)
	}
	iceAnswer := a.do("GET", "/ice-servers", m.token, "")
	if iceAnswer.status != http.StatusOK {
		t.Fatalf("ice-servers: %d %s", iceAnswer.status, iceAnswer.body)
	}
	for name, ans := range map[string]answer{"join": joinAnswer, "ice-servers": iceAnswer} {
		list := iceList(t, ans)
		if len(list) != 2 {
			t.Fatalf("%s: %d ice servers, want 2: %s", name, len(list), ans.body)
		}
		keys := func(e map[string]json.RawMessage) []string {
			var k []string
			for key := range e {
				k = append(k, key)
			}
			slices.Sort(k)
			return k
		}
		if got := keys(list[0]); !slices.Equal(got, []string{"urls"}) || string(list[0]["urls"]) != `["stun:127.0.0.1:3478"]` {
			t.Errorf("%s: stun entry %s", name, ans.body)
		}
		if got := keys(list[1]); !slices.Equal(got, []string{"credential", "urls", "username"}) {
			t.Errorf("%s: turn entry has %v: %s", name, got, ans.body)
		}
		var username string
		json.Unmarshal(list[1]["username"], &username)
		if username != "1700003600:"+m.ID {
			t.Errorf("%s: turn username %q, want 1700003600:%s", name, username, m.ID)
		}
	}
}

// Without ICE servers configured the list is empty, never null.
func TestICEServersEmpty(t *testing.T) {
	a := newTestAPI(t, Config{}, boltstore.Options{})
	ans := a.do("POST", "/rooms/noice/join", "", "")
	if ans.status != http.StatusCreated || !strings.Contains(string(ans.body), `"ice_servers":[]`) {
		t.Errorf("join: %d %s; want \"ice_servers\":[]", ans.status, ans.body)
	}
	var j struct{ Token string }
	json.Unmarshal(ans.body, &j)
	if ans := a.do("GET", "/ice-servers", j.Token, ""); ans.status != http.StatusOK || strings.TrimSpace(string(ans.body)) != `{"ice_servers":[]}` {
		t.Errorf("ice-servers: %d %s; want {\"ice_servers\":[]}", ans.status, ans.body)
	}
}
