package handlers

import (
	"encoding/json"
	"net/http"

	"github.com/tincan/tincan/store"
	"github.com/tincan/tincan/turn"
)

// joinAnswer is the answer of a join. Its lists are never null: a first
// joiner's "peers" is [].
type joinAnswer struct {
	Room      string   `json:"room"`
	ClientID  string   `json:"client_id"`
	Token     string   `json:"token"`
	Initiator bool     `json:"initiator"`
	Peers     []string `json:"peers"`
	// The joiner's own profile, from the application's join token (a JWT
	// join only), and every other member's, in the order of Peers.
	Identity   string           `json:"identity,omitempty"`
	Name       string           `json:"name,omitempty"`
	Metadata   json.RawMessage  `json:"metadata,omitempty"`
	Members    []memberView     `json:"members"`
	Capacity   int              `json:"capacity"`
	ICEServers []turn.ICEServer `json:"ice_servers"`
	Events     string           `json:"events"`
	Messages   string           `json:"messages"`
}

// memberView is a member as the join answer lists it.
type memberView struct {
	ClientID string          `json:"client_id"`
	Identity string          `json:"identity,omitempty"`
	Name     string          `json:"name,omitempty"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// handleJoin admits a member to the room, or resumes the member whose token
// the request carries: 201 for a new member, 200 for a resume. With
// JoinTokens (-auth jwt) a new member needs the application's join token
// (joinProfile); a JWT whose subject is a member already resumes it. A resume
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
		var profile store.Profile
		if !resume && s.cfg.JoinTokens != nil {
			if profile, err = s.joinProfile(r, token, room); err != nil {
				fail(w, err)
				return
			}
			token = "" // a JWT, not a member's token
		}
		if s.streams.isDraining() {
			fail(w, errorf(503, "shutting_down", "server is shutting down"))
			return
		}
		guessed, ok := s.admitGuess(w, r, resume, room, password)
		if !ok {
			return
		}
		j, err := s.store.Join(r.Context(), store.JoinRequest{Room: room, Password: password, Token: token, Profile: profile})
		guessed(err)
		if err != nil {
			fail(w, err)
			return
		}
		status := http.StatusCreated
		if j.Resumed {
			status = http.StatusOK
		}
		s.log.Info("joined", "room", room, "client", j.ID, "resumed", j.Resumed, "peers", len(j.Peers), "identity", profile.Identity)
		peers := j.Peers
		if peers == nil {
			peers = []string{} // the first joiner's "peers" is [], never null
		}
		members := make([]memberView, len(peers))
		for i, id := range peers {
			members[i].ClientID = id
			if i < len(j.Profiles) {
				p := j.Profiles[i]
				members[i].Identity, members[i].Name, members[i].Metadata = p.Identity, p.Name, p.Metadata
			}
		}
		encode(w, status, joinAnswer{
			Room: room, ClientID: j.ID, Token: j.Token,
			Initiator: len(peers) > 0, Peers: peers, Capacity: s.store.Capacity(),
			Identity: profile.Identity, Name: profile.Name, Metadata: profile.Metadata, Members: members,
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
