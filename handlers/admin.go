package handlers

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/tincan/tincan/store"
)

// The admin API, for the application's backend: list and inspect rooms,
// close a room, kick a member, post a message from the server. Served only
// when Config.AdminKey is set (else every path under /admin/ is 404, as
// for any unknown path), to callers that send Authorization: Bearer <key>.
// Every change is durable in the store before the answer, and reaches the
// members as the store's changes always do (peer-left, frames, 401s).

// adminRoutes maps the admin API onto r.
func (s *Server) adminRoutes(r *httprouter.Router) {
	if s.cfg.AdminKey == "" {
		return
	}
	r.Handler("GET", "/admin/v1/rooms", s.admin(s.handleAdminRooms()))
	r.Handler("GET", "/admin/v1/rooms/:room", s.admin(s.handleAdminRoom()))
	r.Handler("DELETE", "/admin/v1/rooms/:room", s.admin(s.handleAdminClose()))
	r.Handler("DELETE", "/admin/v1/rooms/:room/members/:client", s.admin(s.handleAdminKick()))
	r.Handler("POST", "/admin/v1/rooms/:room/messages", s.admin(s.handleAdminPost()))
}

// admin lets through the calls that carry the admin key. A wrong or
// missing key is 401 unauthorized and counts as a failed guess of the
// caller's address (PasswordGuesses within PasswordGuessWindow), after
// which the address is refused with 429 too_many_guesses before any
// comparison.
func (s *Server) admin(next http.Handler) http.Handler {
	key := []byte(s.cfg.AdminKey)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		guessed, wait := s.adminKeys.admit("admin", s.clientIP(r), s.cfg.Now())
		if guessed == nil {
			retry := retryAfterSeconds(wait)
			w.Header().Set("Retry-After", retry)
			fail(w, errorf(http.StatusTooManyRequests, "too_many_guesses", "too many wrong admin keys from your address; retry in %s s", retry))
			return
		}
		ok := subtle.ConstantTimeCompare([]byte(bearer(r, false)), key) == 1
		guessed(!ok, s.cfg.Now())
		if !ok {
			s.metrics.adminKeysRefused.Inc()
			fail(w, errorf(http.StatusUnauthorized, "unauthorized", "the admin API needs the admin key: send Authorization: Bearer <admin key>"))
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// adminRoom is a room as the admin API shows it.
type adminRoom struct {
	Name       string        `json:"name"`
	Occupants  int           `json:"occupants"`
	Created    time.Time     `json:"created"`
	LastActive time.Time     `json:"last_active"`
	Members    []adminMember `json:"members,omitempty"`
}

type adminMember struct {
	ClientID  string          `json:"client_id"`
	Identity  string          `json:"identity,omitempty"`
	Name      string          `json:"name,omitempty"`
	Metadata  json.RawMessage `json:"metadata,omitempty"`
	Joined    time.Time       `json:"joined"`
	Listening bool            `json:"listening"`
}

func viewRoom(ri store.RoomInfo) adminRoom {
	return adminRoom{Name: ri.Name, Occupants: ri.Occupants, Created: ri.Created.UTC(), LastActive: ri.LastActive.UTC()}
}

// The most rooms one page lists, and how many without ?limit=.
const (
	adminPageMax     = 1000
	adminPageDefault = 100
)

// handleAdminRooms lists rooms in name order, a page at a time:
// ?after=<name> continues after that room, ?limit= (1-1000, default 100)
// bounds the page; "next" is the name to pass as after for the next page,
// absent on the last.
func (s *Server) handleAdminRooms() http.Handler {
	type answer struct {
		Rooms []adminRoom `json:"rooms"`
		Next  string      `json:"next,omitempty"`
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		after, limit, err := parseAdminPage(r.URL.Query().Get("after"), r.URL.Query().Get("limit"))
		if err != nil {
			fail(w, err)
			return
		}
		// One more than asked: whether there is a next page.
		rooms, err := s.store.Rooms(r.Context(), after, limit+1)
		if err != nil {
			fail(w, err)
			return
		}
		a := answer{Rooms: make([]adminRoom, 0, min(len(rooms), limit))}
		for i, ri := range rooms {
			if i == limit {
				a.Next = rooms[i-1].Name
				break
			}
			a.Rooms = append(a.Rooms, viewRoom(ri))
		}
		encode(w, http.StatusOK, a)
	})
}

// parseAdminPage reads ?after= (empty, or a room name) and ?limit=.
func parseAdminPage(after, limit string) (string, int, error) {
	if after != "" && !validRoom(after) {
		return "", 0, errorf(400, "bad_request", "after %.80q is not a room name (^[A-Za-z0-9_-]{1,64}$)", after)
	}
	n := adminPageDefault
	if limit != "" {
		v, err := strconv.Atoi(limit)
		if err != nil || v < 1 || v > adminPageMax {
			return "", 0, errorf(400, "bad_request", "limit %.20q must be a whole number from 1 to %d", limit, adminPageMax)
		}
		n = v
	}
	return after, n, nil
}

// handleAdminRoom describes a room and its members, in join order.
func (s *Server) handleAdminRoom() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		room, err := roomParam(r)
		if err != nil {
			fail(w, err)
			return
		}
		ri, members, err := s.store.Room(r.Context(), room)
		if err != nil {
			fail(w, err)
			return
		}
		a := viewRoom(ri)
		a.Members = make([]adminMember, len(members))
		for i, m := range members {
			a.Members[i] = adminMember{ClientID: m.ID, Identity: m.Identity, Name: m.Name, Metadata: m.Metadata,
				Joined: m.Joined.UTC(), Listening: m.Listening}
		}
		encode(w, http.StatusOK, a)
	})
}

// handleAdminClose closes a room: 204.
func (s *Server) handleAdminClose() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		room, err := roomParam(r)
		if err != nil {
			fail(w, err)
			return
		}
		if err := s.store.CloseRoom(r.Context(), room); err != nil {
			fail(w, err)
			return
		}
		s.log.Info("room closed by the admin API", "room", room)
		w.WriteHeader(http.StatusNoContent)
	})
}

// handleAdminKick removes a member: 204.
func (s *Server) handleAdminKick() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		room, err := roomParam(r)
		if err != nil {
			fail(w, err)
			return
		}
		id := httprouter.ParamsFromContext(r.Context()).ByName("client")
		if id == "" || len(id) > 64 {
			fail(w, errorf(404, "not_found", "no member %.80q in room %q", id, room))
			return
		}
		if err := s.store.Kick(r.Context(), store.Member{Room: room, ID: id}); err != nil {
			fail(w, err)
			return
		}
		s.log.Info("member kicked by the admin API", "room", room, "client", id)
		w.WriteHeader(http.StatusNoContent)
	})
}

// handleAdminPost posts a message (or a batch) from the server, "from":
// "server", to every member of the room or to its "to": answered as a
// member's post is.
func (s *Server) handleAdminPost() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		room, err := roomParam(r)
		if err != nil {
			fail(w, err)
			return
		}
		s.post(w, r, store.Member{Room: room, ID: store.ServerID})
	})
}
