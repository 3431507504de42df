package handlers

import (
	"context"
	"encoding/json"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/tincan/tincan/store"
	"github.com/tincan/tincan/turn"
)

// roomParam reads and checks the {room} of the path.
func roomParam(r *http.Request) (string, error) {
	room := httprouter.ParamsFromContext(r.Context()).ByName("room")
	if !validRoom(room) {
		return "", errorf(400, "bad_room_name", "room name %.80q must match ^[A-Za-z0-9_-]{1,64}$", room)
	}
	return room, nil
}

// bearer returns the request's token: the Authorization header, or, where
// allowQuery (GET, leave), the token= query parameter.
func bearer(r *http.Request, allowQuery bool) string {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, _ := strings.Cut(h, " ")
		if strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(token)
		}
		return ""
	}
	if allowQuery {
		return r.URL.Query().Get("token")
	}
	return ""
}

// member authenticates a member call on a room path.
func (s *Server) member(r *http.Request, allowQuery bool) (store.Member, error) {
	room, err := roomParam(r)
	if err != nil {
		return store.Member{}, err
	}
	m, err := s.authenticate(r, allowQuery)
	if err == nil && m.Room != room {
		return store.Member{}, errorf(403, "not_member", "the token belongs to another room, not %q", room)
	}
	return m, err
}

// authenticate finds the member whose token the request carries, and
// counts the request as a sign of life.
func (s *Server) authenticate(r *http.Request, allowQuery bool) (store.Member, error) {
	token := bearer(r, allowQuery)
	if token == "" {
		return store.Member{}, errorf(401, "unauthorized", "this call needs the member's token (Authorization: Bearer …)")
	}
	m, err := s.store.Authenticate(r.Context(), token)
	if err != nil {
		return store.Member{}, err
	}
	s.store.Touch(m)
	return m, nil
}

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

func (s *Server) handleJoin() http.Handler {
	type request struct {
		Password *string `json:"password"`
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		room, err := roomParam(r)
		if err != nil {
			fail(w, err)
			return
		}
		body, err := readBody(w, r, 4096)
		if err != nil {
			fail(w, err)
			return
		}
		var req request
		if len(strings.TrimSpace(string(body))) > 0 {
			if err := json.Unmarshal(body, &req); err != nil {
				fail(w, errorf(400, "bad_json", `join body must be empty, {} or {"password":"…"}`))
				return
			}
		}
		var password string
		if req.Password != nil {
			password = *req.Password
		}
		if len(password) > 72 {
			fail(w, errorf(400, "bad_request", "password longer than 72 bytes"))
			return
		}
		if s.streams.isDraining() {
			fail(w, errorf(503, "shutting_down", "server is shutting down"))
			return
		}
		j, err := s.store.Join(r.Context(), store.JoinRequest{Room: room, Password: password, Token: bearer(r, false)})
		if err != nil {
			fail(w, err)
			return
		}
		status := http.StatusCreated
		if j.Resumed {
			status = http.StatusOK
		}
		s.log.Info("joined", "room", room, "client", j.ID, "resumed", j.Resumed, "peers", len(j.Peers))
		encode(w, status, joinAnswer{
			Room: room, ClientID: j.ID, Token: j.Token,
			Initiator: len(j.Peers) > 0, Peers: j.Peers, Capacity: s.store.Capacity(),
			ICEServers: s.iceServers(j.ID),
			Events:     "/rooms/" + room + "/events", Messages: "/rooms/" + room + "/messages",
		})
	})
}

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

func (s *Server) handleRoom() http.Handler {
	type answer struct {
		Room      string `json:"room"`
		Occupants int    `json:"occupants"`
		Capacity  int    `json:"capacity"`
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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

func (s *Server) handleHealthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := s.store.Ping(ctx); err != nil {
			fail(w, errorf(503, "unhealthy", "store is not writable").because(err))
			return
		}
		encode(w, http.StatusOK, map[string]string{"status": "ok"})
	})
}

// pageHeaders are the security headers of the web page.
func pageHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; "+
		"img-src 'self' data:; media-src 'self' blob: mediastream:; connect-src 'self'; "+
		"frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Permissions-Policy", "camera=(self), microphone=(self)")
}

func (s *Server) handlePage(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/r/") {
			if _, err := roomParam(r); err != nil {
				fail(w, err)
				return
			}
		}
		if s.cfg.Static == nil {
			fail(w, errorf(404, "not_found", "this server has no web page"))
			return
		}
		page, err := fs.ReadFile(s.cfg.Static, name)
		if err != nil {
			fail(w, errorf(404, "not_found", "page %s is not built into this server", name))
			return
		}
		pageHeaders(w.Header())
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		w.Write(page)
	})
}

func (s *Server) handleStatic() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(httprouter.ParamsFromContext(r.Context()).ByName("file"), "/")
		if s.cfg.Static == nil || !fs.ValidPath(name) {
			fail(w, errorf(404, "not_found", "no such file"))
			return
		}
		if fi, err := fs.Stat(s.cfg.Static, name); err != nil || fi.IsDir() {
			fail(w, errorf(404, "not_found", "no such file: %.100s", name))
			return
		}
		pageHeaders(w.Header())
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, s.cfg.Static, name)
	})
}
