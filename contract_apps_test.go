package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tincan/tincan/store/etcdstore/etcdtest"
)

// Apps in control, over real HTTP: join tokens (-auth jwt) and the admin
// API, on both engines (a bbolt file; an in-process etcd).

const (
	testJWTSecret = "0123456789abcdef0123456789abcdef-test-secret"
	testAdminKey  = "admin-key-for-the-tests-0123456789"
)

// mintJWT signs claims with HS256 and testJWTSecret, as an app's backend
// would with golang-jwt (not the server's code).
func mintJWT(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(testJWTSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// joinClaims are the claims of a valid join token for sub in room.
func joinClaims(room, sub, name string) jwt.MapClaims {
	c := jwt.MapClaims{"sub": sub, "room": room, "exp": time.Now().Add(time.Minute).Unix()}
	if name != "" {
		c["name"] = name
	}
	return c
}

// appJoin is a join answer with what join tokens add.
type appJoin struct {
	joinAnswer
	Identity string          `json:"identity"`
	Name     string          `json:"name"`
	Metadata json.RawMessage `json:"metadata"`
	Members  []struct {
		ClientID string          `json:"client_id"`
		Identity string          `json:"identity"`
		Name     string          `json:"name"`
		Metadata json.RawMessage `json:"metadata"`
	} `json:"members"`
}

// jwtJoin joins room with the join token jwt and wants status.
func jwtJoin(t testing.TB, e *endpoint, room, token string, status int) (*client, appJoin) {
	t.Helper()
	a := e.do(t, "POST", "/rooms/"+room+"/join", "", "Authorization", "Bearer "+token)
	if a.Status != status {
		t.Fatalf("JWT join of %s: %d %s, want %d", room, a.Status, a.Body, status)
	}
	var j appJoin
	a.json(t, &j)
	return &client{ep: e, Room: room, joinAnswer: j.joinAnswer}, j
}

// engines runs f on a server of each engine, started with flags.
func engines(t *testing.T, f func(t *testing.T, srv *testServer), opts ...serverOption) {
	t.Run("bbolt", func(t *testing.T) {
		f(t, newTestServer(t, opts...))
	})
	t.Run("etcd", func(t *testing.T) {
		etcd := etcdtest.Start(t, etcdtest.Config{Members: 1})
		f(t, newTestServer(t, append(opts, withFlags("-etcd", etcd.Endpoint(0), "-etcd-prefix", "/apps/"))...))
	})
}

func TestJoinTokens(t *testing.T) {
	engines(t, func(t *testing.T, srv *testServer) {
		room := "jwt-room"
		t.Run("refusals write nothing", func(t *testing.T) {
			now := time.Now()
			big := strings.Repeat("x", 1100)
			other := func(c jwt.MapClaims) string {
				s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte("another-secret-another-secret-0123"))
				return s
			}
			none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, joinClaims(room, "eve", "")).SignedString(jwt.UnsafeAllowNoneSignatureType)
			for _, c := range []struct {
				name, header, code, detail string
			}{
				{"no token", "", "jwt_required", "Bearer"},
				{"not a JWT", "Bearer not-a-member-token", "bad_jwt", "neither a JWT"},
				{"malformed", "Bearer a.b.c", "bad_jwt", "malformed"},
				{"expired", "Bearer " + mintJWT(t, jwt.MapClaims{"sub": "eve", "room": room, "exp": now.Add(-time.Hour).Unix()}), "bad_jwt", "expired"},
				{"not yet valid", "Bearer " + mintJWT(t, jwt.MapClaims{"sub": "eve", "room": room, "exp": now.Add(2 * time.Hour).Unix(), "nbf": now.Add(time.Hour).Unix()}), "bad_jwt", "not valid before"},
				{"wrong signature", "Bearer " + other(joinClaims(room, "eve", "")), "bad_jwt", "signature"},
				{"alg none", "Bearer " + none, "bad_jwt", "alg none"},
				{"another room", "Bearer " + mintJWT(t, joinClaims("elsewhere", "eve", "")), "bad_jwt", "room"},
				{"no sub", "Bearer " + mintJWT(t, jwt.MapClaims{"room": room, "exp": now.Add(time.Minute).Unix()}), "bad_jwt", "sub"},
				{"no room", "Bearer " + mintJWT(t, jwt.MapClaims{"sub": "eve", "exp": now.Add(time.Minute).Unix()}), "bad_jwt", "room"},
				{"no exp", "Bearer " + mintJWT(t, jwt.MapClaims{"sub": "eve", "room": room}), "bad_jwt", "exp"},
				{"metadata too large", "Bearer " + mintJWT(t, jwt.MapClaims{"sub": "eve", "room": room, "exp": now.Add(time.Minute).Unix(), "metadata": big}), "bad_jwt", "metadata"},
			} {
				var header []string
				if c.header != "" {
					header = []string{"Authorization", c.header}
				}
				a := srv.do(t, "POST", "/rooms/"+room+"/join", "", header...)
				if a.Status != 401 {
					t.Fatalf("%s: %d %s, want 401", c.name, a.Status, a.Body)
				}
				if code := a.problem(t); code != c.code {
					t.Fatalf("%s: code %s, want %s: %s", c.name, code, c.code, a.Body)
				}
				var p struct{ Detail string }
				a.json(t, &p)
				if !strings.Contains(strings.ToLower(p.Detail), strings.ToLower(c.detail)) {
					t.Errorf("%s: detail %q does not say %q", c.name, p.Detail, c.detail)
				}
			}
			if n := srv.roomInfo(t, room).Occupants; n != 0 {
				t.Fatalf("%d occupants after refused joins", n)
			}
			if a := srv.do(t, "GET", "/admin/v1/rooms", "", "Authorization", "Bearer "+testAdminKey); a.Status != 200 || !strings.Contains(string(a.Body), `"rooms":[]`) {
				t.Fatalf("rooms after refused joins: %d %s", a.Status, a.Body)
			}
		})

		t.Run("identity is visible and the same sub resumes", func(t *testing.T) {
			claims := joinClaims(room, "alice", "Alice")
			claims["metadata"] = map[string]any{"role": "host"}
			alice, aj := jwtJoin(t, srv.endpoint, room, mintJWT(t, claims), 201)
			if aj.Identity != "alice" || aj.Name != "Alice" || string(aj.Metadata) != `{"role":"host"}` || len(aj.Members) != 0 {
				t.Fatalf("alice's join answer: %+v", aj)
			}
			aliceEvents := alice.events(t, "")
			aliceEvents.ready(t)

			bob, bj := jwtJoin(t, srv.endpoint, room, mintJWT(t, joinClaims(room, "bob", "Bob")), 201)
			if len(bj.Members) != 1 || bj.Members[0].ClientID != alice.ClientID || bj.Members[0].Identity != "alice" ||
				bj.Members[0].Name != "Alice" || string(bj.Members[0].Metadata) != `{"role":"host"}` {
				t.Fatalf("bob's members: %+v", bj.Members)
			}
			joined := aliceEvents.message(t)
			if joined["type"] != "peer-joined" || joined["peer"] != bob.ClientID || joined["identity"] != "bob" || joined["name"] != "Bob" {
				t.Fatalf("alice got %v, want peer-joined of bob with his identity and name", joined)
			}

			// The room is full (capacity 2): a third person is refused, bob
			// on a second device is not.
			jwtJoin(t, srv.endpoint, room, mintJWT(t, joinClaims(room, "carol", "")), 409)
			bobEvents := bob.events(t, "")
			bobEvents.ready(t)
			bob2, b2 := jwtJoin(t, srv.endpoint, room, mintJWT(t, joinClaims("*", "bob", "Bob")), 200)
			if bob2.ClientID != bob.ClientID || bob2.Token == bob.Token || b2.Identity != "bob" {
				t.Fatalf("bob again: id %s token changed %v identity %q; want id %s and a new token", bob2.ClientID, bob2.Token != bob.Token, b2.Identity, bob.ClientID)
			}
			if a := srv.do(t, "GET", "/rooms/"+room+"/messages?since=0&wait=0", "", bob.auth()...); a.Status != 401 {
				t.Fatalf("bob's old token after the second device joined: %d %s", a.Status, a.Body)
			}
			// The old stream ends.
			timeout := time.After(10 * time.Second)
		old:
			for {
				select {
				case _, open := <-bobEvents.frames:
					if !open {
						break old
					}
				case <-timeout:
					t.Fatal("bob's old stream did not end")
				}
			}
			// The new token works, and a member token still resumes.
			bob2.post(t, `{"type":"hello"}`)
			bob2.resume(t)
		})

		t.Run("open mode ignores JWTs", func(t *testing.T) {
			open := newTestServer(t)
			_, j := jwtJoin(t, open.endpoint, "open-room", mintJWT(t, joinClaims("open-room", "alice", "Alice")), 201)
			if j.Identity != "" || j.Name != "" {
				t.Fatalf("-auth open took the JWT's identity: %+v", j)
			}
		})
	}, withEnv("TINCAN_AUTH", "jwt"), withEnv("TINCAN_JWT_SECRET", testJWTSecret), withEnv("TINCAN_ADMIN_KEY", testAdminKey))
}

// adminDo is a call of the admin API with the test's key.
func adminDo(t testing.TB, e *endpoint, method, path, body string) answer {
	t.Helper()
	return e.do(t, method, "/admin/v1"+path, body, "Authorization", "Bearer "+testAdminKey)
}

func TestAdminAPI(t *testing.T) {
	t.Run("off without a key", func(t *testing.T) {
		srv := newTestServer(t)
		if a := srv.do(t, "GET", "/admin/v1/rooms", "", "Authorization", "Bearer "+testAdminKey); a.Status != 404 || a.problem(t) != "not_found" {
			t.Fatalf("admin API without -admin-key: %d %s", a.Status, a.Body)
		}
	})
	t.Run("wrong keys are limited per address", func(t *testing.T) {
		srv := newTestServer(t, withEnv("TINCAN_ADMIN_KEY", testAdminKey), withFlags("-password-guesses", "3"))
		for i := range 3 {
			if a := srv.do(t, "GET", "/admin/v1/rooms", "", "Authorization", "Bearer wrong-key-wrong-key"); a.Status != 401 || a.problem(t) != "unauthorized" {
				t.Fatalf("wrong key %d: %d %s", i, a.Status, a.Body)
			}
		}
		a := srv.do(t, "GET", "/admin/v1/rooms", "", "Authorization", "Bearer "+testAdminKey)
		if a.Status != 429 || a.problem(t) != "too_many_guesses" || a.Header.Get("Retry-After") == "" {
			t.Fatalf("after 3 wrong keys, even the right one: %d %s", a.Status, a.Body)
		}
	})

	hooks := newReceiver(t)
	engines(t, func(t *testing.T, srv *testServer) {
		t.Run("list and inspect", func(t *testing.T) {
			for _, r := range []string{"a-room", "b-room", "c-room"} {
				srv.join(t, r, 201)
			}
			var page struct {
				Rooms []struct {
					Name       string
					Occupants  int
					Created    time.Time
					LastActive time.Time `json:"last_active"`
				}
				Next string
			}
			adminDo(t, srv.endpoint, "GET", "/rooms?limit=2", "").json(t, &page)
			if len(page.Rooms) != 2 || page.Rooms[0].Name != "a-room" || page.Rooms[1].Name != "b-room" || page.Next != "b-room" ||
				page.Rooms[0].Occupants != 1 || page.Rooms[0].Created.IsZero() || page.Rooms[0].LastActive.Before(page.Rooms[0].Created) {
				t.Fatalf("first page: %+v", page)
			}
			page.Next = ""
			adminDo(t, srv.endpoint, "GET", "/rooms?after=b-room&limit=2", "").json(t, &page)
			if len(page.Rooms) != 1 || page.Rooms[0].Name != "c-room" || page.Next != "" {
				t.Fatalf("second page: %+v", page)
			}
			for _, bad := range []string{"?limit=0", "?limit=1001", "?limit=x", "?after=no%20room"} {
				if a := adminDo(t, srv.endpoint, "GET", "/rooms"+bad, ""); a.Status != 400 || a.problem(t) != "bad_request" {
					t.Fatalf("rooms%s: %d %s", bad, a.Status, a.Body)
				}
			}
			if a := adminDo(t, srv.endpoint, "GET", "/rooms/nowhere", ""); a.Status != 404 || a.problem(t) != "not_found" {
				t.Fatalf("unknown room: %d %s", a.Status, a.Body)
			}

			x := srv.join(t, "inspect", 201)
			y := srv.join(t, "inspect", 201)
			s := x.events(t, "")
			s.ready(t)
			var room struct {
				Name      string
				Occupants int
				Members   []struct {
					ClientID  string `json:"client_id"`
					Joined    time.Time
					Listening bool
				}
			}
			adminDo(t, srv.endpoint, "GET", "/rooms/inspect", "").json(t, &room)
			if room.Name != "inspect" || room.Occupants != 2 || len(room.Members) != 2 || room.Members[0].ClientID != x.ClientID ||
				room.Members[1].ClientID != y.ClientID || !room.Members[0].Listening || room.Members[0].Joined.IsZero() {
				t.Fatalf("room: %+v", room)
			}
		})

		t.Run("a message from the server", func(t *testing.T) {
			x := srv.join(t, "speak", 201)
			y := srv.join(t, "speak", 201)
			s := x.events(t, "")
			s.ready(t)
			if m := s.message(t); m["type"] != "peer-joined" {
				t.Fatalf("x's first message: %v", m)
			}
			if a := adminDo(t, srv.endpoint, "POST", "/rooms/speak/messages", `{"type":"notice","text":"hi all"}`); a.Status != 201 {
				t.Fatalf("server post: %d %s", a.Status, a.Body)
			}
			if m := s.message(t); m["from"] != "server" || m["text"] != "hi all" {
				t.Fatalf("over SSE: %v", m)
			}
			p := y.poll(t, 0, "5")
			if len(p.Messages) != 1 || p.Messages[0]["from"] != "server" {
				t.Fatalf("over long-poll: %+v", p)
			}
			if a := adminDo(t, srv.endpoint, "POST", "/rooms/speak/messages", `{"type":"notice","text":"just you","to":"`+y.ClientID+`"}`); a.Status != 201 {
				t.Fatalf("server post to one: %d %s", a.Status, a.Body)
			}
			if p := y.poll(t, p.Next, "5"); len(p.Messages) != 1 || p.Messages[0]["text"] != "just you" {
				t.Fatalf("addressed: %+v", p)
			}
			s.quiet(t, 300*time.Millisecond)
			for path, want := range map[string]int{"/rooms/nowhere/messages": 404, "/rooms/speak/messages?": 400} {
				body := `{"type":"notice"}`
				if want == 400 {
					body = `{"type":`
				}
				if a := adminDo(t, srv.endpoint, "POST", strings.TrimSuffix(path, "?"), body); a.Status != want {
					t.Fatalf("POST %s %s: %d %s, want %d", path, body, a.Status, a.Body, want)
				}
			}
		})

		t.Run("kick", func(t *testing.T) {
			x := srv.join(t, "kick", 201)
			y := srv.join(t, "kick", 201)
			xs, ys := x.events(t, ""), y.events(t, "")
			xs.ready(t)
			ys.ready(t)
			if m := xs.message(t); m["type"] != "peer-joined" {
				t.Fatalf("x's first message: %v", m)
			}
			if a := adminDo(t, srv.endpoint, "DELETE", "/rooms/kick/members/"+y.ClientID, ""); a.Status != 204 {
				t.Fatalf("kick: %d %s", a.Status, a.Body)
			}
			if m := lastFrame(t, ys); m["type"] != "kicked" || m["room"] != "kick" {
				t.Fatalf("the kicked member's last frame: %v", m)
			}
			if m := xs.message(t); m["type"] != "peer-left" || m["peer"] != y.ClientID || m["reason"] != "kicked" {
				t.Fatalf("the other member got %v", m)
			}
			for _, path := range []string{"/rooms/kick/messages?since=0&wait=0", "/rooms/kick/events"} {
				if a := srv.do(t, "GET", path, "", y.auth()...); a.Status != 401 || a.problem(t) != "kicked" {
					t.Fatalf("GET %s with the kicked token: %d %s", path, a.Status, a.Body)
				}
			}
			if a := adminDo(t, srv.endpoint, "DELETE", "/rooms/kick/members/"+y.ClientID, ""); a.Status != 404 || a.problem(t) != "not_found" {
				t.Fatalf("kick again: %d %s", a.Status, a.Body)
			}
			hooks.await(t, "member.left of the kicked member", 0, func(ev hookEvent) bool {
				return ev.Type == "member.left" && ev.Data.ClientID == y.ClientID && ev.Data.Reason == "kicked" && ev.Data.Occupants == 1
			})

			// A long-poll in flight gets the kick as its answer.
			z := srv.join(t, "kick", 201)
			got := make(chan pollAnswer, 1)
			go func() { got <- z.poll(t, 0, "20") }()
			time.Sleep(200 * time.Millisecond) // the poll waits (a kick before it is a 401, checked above)
			if a := adminDo(t, srv.endpoint, "DELETE", "/rooms/kick/members/"+z.ClientID, ""); a.Status != 204 {
				t.Fatalf("kick z: %d %s", a.Status, a.Body)
			}
			select {
			case p := <-got:
				if len(p.Messages) == 0 || p.Messages[len(p.Messages)-1]["type"] != "kicked" {
					t.Fatalf("the waiting long-poll: %+v", p)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("the waiting long-poll was not answered")
			}
		})

		t.Run("close", func(t *testing.T) {
			x := srv.join(t, "closing", 201)
			y := srv.join(t, "closing", 201)
			xs := x.events(t, "")
			xs.ready(t)
			if m := xs.message(t); m["type"] != "peer-joined" {
				t.Fatalf("x's first message: %v", m)
			}
			y.post(t, `{"type":"kept"}`)
			before := hooks.count()
			if a := adminDo(t, srv.endpoint, "DELETE", "/rooms/closing", ""); a.Status != 204 {
				t.Fatalf("close: %d %s", a.Status, a.Body)
			}
			if m := xs.message(t); m["type"] != "kept" {
				t.Fatalf("before the close: %v", m)
			}
			if m := lastFrame(t, xs); m["type"] != "room-closed" || m["room"] != "closing" {
				t.Fatalf("the member's last frame: %v", m)
			}
			for _, c := range []*client{x, y} {
				if a := srv.do(t, "GET", "/rooms/closing/messages?since=0&wait=0", "", c.auth()...); a.Status != 401 || a.problem(t) != "room_closed" {
					t.Fatalf("a closed room's token: %d %s", a.Status, a.Body)
				}
			}
			if n := srv.roomInfo(t, "closing").Occupants; n != 0 {
				t.Fatalf("%d occupants after the close", n)
			}
			hooks.await(t, "room.closed of the closed room", before, func(ev hookEvent) bool {
				return ev.Type == "room.closed" && ev.Data.Room == "closing" && ev.Data.Reason == "closed" && ev.Data.Occupants == 0
			})
			if a := adminDo(t, srv.endpoint, "DELETE", "/rooms/closing", ""); a.Status != 404 || a.problem(t) != "not_found" {
				t.Fatalf("close again: %d %s", a.Status, a.Body)
			}
			// The name is free again, with nothing of the old room in it.
			z := srv.join(t, "closing", 201)
			if p := z.poll(t, 0, "0"); len(p.Messages) != 0 {
				t.Fatalf("a new room of a closed room's name holds %+v", p)
			}
		})
	}, withEnv("TINCAN_ADMIN_KEY", testAdminKey), withEnv("TINCAN_WEBHOOK_URL", hooks.url()), withEnv("TINCAN_WEBHOOK_SECRET", testWebhookSecret))
}

// lastFrame reads the frame a member gets when the application removes it:
// data without an id, and then the stream ends.
func lastFrame(t testing.TB, s *stream) map[string]any {
	t.Helper()
	f := s.next(t)
	var m map[string]any
	if err := json.Unmarshal([]byte(f.Data), &m); err != nil || f.ID != "" || f.Event != "" || m["id"] != nil {
		t.Fatalf("last frame %+v: %v", f, err)
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case g, open := <-s.frames:
			if !open {
				return m // the stream ended
			}
			if !g.Comment {
				t.Fatalf("a frame after the last: %+v", g)
			}
		case <-timeout:
			t.Fatal("the stream did not end after its last frame")
		}
	}
}
