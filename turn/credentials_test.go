package turn

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestICEServersFormat(t *testing.T) {
	now := time.Unix(1700000000, 0)
	c := Credentials{
		Secret: []byte("north-secret"),
		TTL:    time.Hour,
		URLs:   EmbeddedURLs("203.0.113.7", 3478),
		Now:    func() time.Time { return now },
	}
	got := c.ICEServers("alice")
	// Known answer: printf %s 1700003600:alice | openssl dgst -sha1 -hmac north-secret -binary | base64
	want := []ICEServer{
		{URLs: []string{"stun:203.0.113.7:3478"}},
		{
			URLs:       []string{"turn:203.0.113.7:3478?transport=udp", "turn:203.0.113.7:3478?transport=tcp"},
			Username:   "1700003600:alice",
			Credential: "Ji4axghh2/aljHmsPgH9mtDGVLw=",
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ICEServers =\n%+v\nwant\n%+v", got, want)
	}
	b, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	wantJSON := `[{"urls":["stun:203.0.113.7:3478"]},{"urls":["turn:203.0.113.7:3478?transport=udp","turn:203.0.113.7:3478?transport=tcp"],"username":"1700003600:alice","credential":"Ji4axghh2/aljHmsPgH9mtDGVLw="}]`
	if string(b) != wantJSON {
		t.Errorf("JSON = %s\nwant %s", b, wantJSON)
	}
}

func TestICEServersExpiryAndDefaultTTL(t *testing.T) {
	now := time.Unix(1800000000, 0)
	for _, tc := range []struct {
		ttl  time.Duration
		want int64
	}{
		{30 * time.Second, 1800000030},
		{24 * time.Hour, 1800086400},
		{0, 1800003600},  // DefaultTTL
		{-1, 1800003600}, // DefaultTTL
	} {
		c := Credentials{Secret: []byte("s"), TTL: tc.ttl, URLs: EmbeddedURLs("192.0.2.1", 3478), Now: func() time.Time { return now }}
		servers := c.ICEServers("id")
		user := servers[1].Username
		exp, id, err := parseUsername(user)
		if err != nil || exp != tc.want || id != "id" {
			t.Errorf("TTL %v: username %q parses to %d %q %v, want expiry %d", tc.ttl, user, exp, id, err, tc.want)
		}
		if servers[1].Credential != credentialFor([]byte("s"), user) {
			t.Errorf("TTL %v: credential does not match the username", tc.ttl)
		}
	}
}

func TestICEServersExtra(t *testing.T) {
	c := Credentials{
		Secret: []byte("s"),
		Extra: []string{
			"stun:stun.example.net:3478",
			"turn:turn.example.net:3478?transport=udp",
			"gopher:nope",
			"TURNS:turn.example.net:5349?transport=tcp",
			"stuns:stun.example.net:5349",
		},
		Now: func() time.Time { return time.Unix(100, 0) },
	}
	got := c.ICEServers("bob")
	if len(got) != 2 {
		t.Fatalf("ICEServers = %+v, want 2 entries", got)
	}
	if !reflect.DeepEqual(got[0], ICEServer{URLs: []string{"stun:stun.example.net:3478", "stuns:stun.example.net:5349"}}) {
		t.Errorf("stun entry = %+v", got[0])
	}
	turn := got[1]
	if !reflect.DeepEqual(turn.URLs, []string{"turn:turn.example.net:3478?transport=udp", "TURNS:turn.example.net:5349?transport=tcp"}) {
		t.Errorf("turn URLs = %v", turn.URLs)
	}
	if turn.Username != "3700:bob" || turn.Credential != credentialFor([]byte("s"), "3700:bob") {
		t.Errorf("turn credentials = %q %q", turn.Username, turn.Credential)
	}

	// Embedded and extra entries together, embedded first.
	c.URLs = EmbeddedURLs("198.51.100.1", 3478)
	if got := c.ICEServers("bob"); len(got) != 4 || got[0].URLs[0] != "stun:198.51.100.1:3478" || got[2].URLs[0] != "stun:stun.example.net:3478" {
		t.Errorf("combined ICEServers = %+v", got)
	}
}

func TestICEServersWithoutCredentials(t *testing.T) {
	urls := EmbeddedURLs("192.0.2.1", 3478)
	for name, c := range map[string]struct {
		cr Credentials
		id string
	}{
		"no secret":    {Credentials{URLs: urls}, "id"},
		"no client id": {Credentials{URLs: urls, Secret: []byte("s")}, ""},
	} {
		got := c.cr.ICEServers(c.id)
		if len(got) != 1 || got[0].Username != "" || got[0].URLs[0] != "stun:192.0.2.1:3478" {
			t.Errorf("%s: ICEServers = %+v, want the stun entry only", name, got)
		}
	}
	if got := (Credentials{}).ICEServers("x"); got == nil || len(got) != 0 {
		t.Errorf("empty Credentials: ICEServers = %#v, want an empty non-nil list", got)
	}
}

func TestEmbeddedURLs(t *testing.T) {
	for _, tc := range []struct {
		ip   string
		port int
		host string
	}{
		{"192.0.2.10", 3478, "192.0.2.10:3478"},
		{"2001:db8::1", 3478, "[2001:db8::1]:3478"},
		{"[2001:db8::1]", 5000, "[2001:db8::1]:5000"},
	} {
		want := []string{"stun:" + tc.host, "turn:" + tc.host + "?transport=udp", "turn:" + tc.host + "?transport=tcp"}
		if got := EmbeddedURLs(tc.ip, tc.port); !reflect.DeepEqual(got, want) {
			t.Errorf("EmbeddedURLs(%q, %d) = %v, want %v", tc.ip, tc.port, got, want)
		}
		for _, u := range EmbeddedURLs(tc.ip, tc.port) {
			if err := CheckURL(u); err != nil {
				t.Errorf("CheckURL(%q): %v", u, err)
			}
		}
	}
	if got := EmbeddedURLs("", 3478); got != nil {
		t.Errorf("EmbeddedURLs without an IP = %v, want nil", got)
	}
}

func TestCheckURL(t *testing.T) {
	for _, u := range []string{
		"stun:stun.l.google.com:19302",
		"stuns:stun.example.net",
		"turn:turn.example.net:3478?transport=tcp",
		"turns:turn.example.net:5349",
		"turn:[2001:db8::1]:3478",
	} {
		if err := CheckURL(u); err != nil {
			t.Errorf("CheckURL(%q): %v", u, err)
		}
	}
	for _, u := range []string{
		"", "turn", "http://example.net", "stun:", "turn:host:3478?transport=sctp", "turn:host:notaport",
	} {
		if err := CheckURL(u); err == nil {
			t.Errorf("CheckURL(%q) = nil, want an error", u)
		}
	}
}

func TestParseUsername(t *testing.T) {
	for _, tc := range []struct {
		in     string
		expiry int64
		id     string
		ok     bool
	}{
		{"1700000000:alice", 1700000000, "alice", true},
		{"0:x", 0, "x", true},
		{"1700000000:a:b:c", 1700000000, "a:b:c", true},
		{"9223372036854775807:x", 9223372036854775807, "x", true},
		{"9223372036854775808:x", 0, "", false}, // overflows int64
		{"1700000000", 0, "", false},
		{"1700000000:", 0, "", false},
		{":alice", 0, "", false},
		{"+1700000000:alice", 0, "", false},
		{"-1:alice", 0, "", false},
		{" 1700000000:alice", 0, "", false},
		{"17000000000000000000000:alice", 0, "", false},
		{"1700000000:" + strings.Repeat("x", maxClientIDLen), 1700000000, strings.Repeat("x", maxClientIDLen), true},
		{"1700000000:" + strings.Repeat("x", maxClientIDLen+1), 0, "", false},
		{"١٢٣:alice", 0, "", false}, // non-ASCII digits
		{"", 0, "", false},
	} {
		exp, id, err := parseUsername(tc.in)
		if (err == nil) != tc.ok || exp != tc.expiry || id != tc.id {
			t.Errorf("parseUsername(%q) = %d, %q, %v; want %d, %q, ok=%v", tc.in, exp, id, err, tc.expiry, tc.id, tc.ok)
		}
	}
}

// FuzzParseUsername checks that parseUsername never panics and that what it
// accepts is exactly "<decimal expiry>:<client id>".
func FuzzParseUsername(f *testing.F) {
	for _, s := range []string{"1700000000:alice", "0:x", "1:a:b", ":", "", "9223372036854775808:x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		exp, id, err := parseUsername(s)
		if err != nil {
			if exp != 0 || id != "" {
				t.Fatalf("parseUsername(%q) failed but returned %d %q", s, exp, id)
			}
			return
		}
		if exp < 0 || id == "" || len(id) > maxClientIDLen {
			t.Fatalf("parseUsername(%q) = %d %q", s, exp, id)
		}
		if digits, _, _ := strings.Cut(s, ":"); strconv.FormatInt(exp, 10) != strings.TrimLeft(digits, "0") && !(exp == 0 && strings.Trim(digits, "0") == "") {
			t.Fatalf("parseUsername(%q): expiry %d does not match %q", s, exp, digits)
		}
		if !strings.HasSuffix(s, ":"+id) {
			t.Fatalf("parseUsername(%q): client id %q is not the tail", s, id)
		}
	})
}
