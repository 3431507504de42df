package handlers

import (
	"net/http"

	"github.com/tincan/tincan/store"
	"github.com/tincan/tincan/turn"
)

// joinAnswer is the answer of a join. Its lists are never null: a first
// joiner's "peers" is [].
type joinAnswer struct {
	Room       string           `json:"room"`
	ClientID   string           `json:"client_id"`
	Token      string           `json:"token"`
	Initiator  bool             `json:"initiator"`
	Peers      []string         `json:"peers"`
	Capacity   int              `json:"capacity"`
	ICEServers []turn.ICEServer `json:"ice_servers"`
	Events     string           `json:"events"`
	Messages   string           `json:"messages"`
}

// handleJoin admits a member to the room, or resumes the member whose token
// the request carries: 201 for a new member, 200 for a resume. A resume
// counts against the member's rate limit, a new join against its
// address's. A join with a password that is not a resume is a guess at
// the room's password, refused with 429 too_many_guesses (before the store compares
// any password) once its address or the room has used up its failed
// guesses. The body is parseJoinBody's: a member other than "password" is
// refused, named.
func (s *Server) handleJoin() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		room, err := roomParam(r)
		if err != nil {
			fail(w, err)
			return
		}
		token := bearer(r, false)
		m, resume := s.resumeOf(r, token, room)
		if resume {
			err = s.limitMember(m)
		} else {
			err = s.limitAddress(r)
		}
		if err != nil {
			fail(w, err)
			return
		}
		body, err := readBody(w, r, 4096)
		if err != nil {
			fail(w, err)
			return
		}
		password, err := parseJoinBody(body)
		if err != nil {
			fail(w, err)
			return
		}
		if s.streams.isDraining() {
			fail(w, errorf(503, "shutting_down", "server is shutting down"))
			return
		}
		guessed, ok := s.admitGuess(w, r, resume, room, password)
		if !ok {
			return
		}
		j, err := s.store.Join(r.Context(), store.JoinRequest{Room: room, Password: password, Token: token})
		guessed(err)
		if err != nil {
			fail(w, err)
			return
		}
		status := http.StatusCreated
		if j.Resumed {
			status = http.StatusOK
		}
		s.log.Info("joined", "room", room, "client", j.ID, "resumed", j.Resumed, "peers", len(j.Peers))
		peers := j.Peers
		if peers == nil {
			peers = []string{} // the first joiner's "peers" is [], never null
		}
		encode(w, status, joinAnswer{
			Room: room, ClientID: j.ID, Token: j.Token,
			Initiator: len(peers) > 0, Peers: peers, Capacity: s.store.Capacity(),
			ICEServers: s.iceServers(j.ID),
			Events:     "/rooms/" + room + "/events", Messages: "/rooms/" + room + "/messages",
		})
	})
}

// handleLeave removes the member: 204.
func (s *Server) handleLeave() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m, err := s.member(r, true)
		if err != nil {
			fail(w, err)
			return
		}
		if _, err := s.store.Leave(r.Context(), m, store.ReasonLeft); err != nil {
			fail(w, err)
			return
		}
		s.log.Info("left", "room", m.Room, "client", m.ID)
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
	})
}

// handleRoom answers how many members a room has, of how many it admits.
// It counts against the address's rate limit.
func (s *Server) handleRoom() http.Handler {
	type answer struct {
		Room      string `json:"room"`
		Occupants int    `json:"occupants"`
		Capacity  int    `json:"capacity"`
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.limitAddress(r); err != nil {
			fail(w, err)
			return
		}
		room, err := roomParam(r)
		if err != nil {
			fail(w, err)
			return
		}
		n, err := s.store.Occupants(r.Context(), room)
		if err != nil {
			fail(w, err)
			return
		}
		encode(w, http.StatusOK, answer{Room: room, Occupants: n, Capacity: s.store.Capacity()})
	})
}
