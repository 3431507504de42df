package handlers

import (
	"net/http"

	"github.com/tincan/tincan/turn"
)

// handleICEServers answers a member's ICE servers, with fresh TURN
// credentials: GET /ice-servers, for a call that outlives them.
func (s *Server) handleICEServers() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m, err := s.authenticate(r, true)
		if err != nil {
			fail(w, err)
			return
		}
		encode(w, http.StatusOK, iceAnswer{ICEServers: s.iceServers(m.ID)})
	})
}

// iceAnswer is the answer of GET /ice-servers.
type iceAnswer struct {
	ICEServers []turn.ICEServer `json:"ice_servers"`
}

// iceServers is the "ice_servers" list for clientID: never null.
func (s *Server) iceServers(clientID string) []turn.ICEServer {
	var list []turn.ICEServer
	if s.cfg.ICEServers != nil {
		list = s.cfg.ICEServers(clientID)
	}
	if list == nil {
		list = []turn.ICEServer{}
	}
	return list
}
