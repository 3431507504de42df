package handlers

import (
	"io/fs"
	"net/http"
	"strings"

	"github.com/julienschmidt/httprouter"
)

// pageHeaders are the security headers of the web page.
func pageHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; "+
		"img-src 'self' data:; media-src 'self' blob: mediastream:; connect-src 'self'; "+
		"frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Permissions-Policy", "camera=(self), microphone=(self)")
}

// handlePage serves the web page name from Config.Static; under /r/ only
// for a valid room name.
func (s *Server) handlePage(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/r/") {
			if _, err := roomParam(r); err != nil {
				fail(w, err)
				return
			}
		}
		s.writePage(w, name, http.StatusOK)
	})
}

// writePage answers the web page name from Config.Static with status, or
// 404 not_found when the server has no such page.
func (s *Server) writePage(w http.ResponseWriter, name string, status int) {
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
	w.WriteHeader(status)
	w.Write(page)
}

// roomPageErrors answers a GET under /r/ that names no call (/r/,
// /r/bad%20name, /r/x/, /r/x/y) with the call page, which tells the person
// what is wrong with the link, when the client asks for HTML (a browser
// following a link): 400 when the segment after /r/ is not a room name,
// 404 when something follows a room name. Everything else goes on to
// next, so API clients still get problem+json; both answers vary by Accept.
func (s *Server) roomPageErrors(next http.Handler) http.Handler {
	page := answerWithin(answerTimeout, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := http.StatusNotFound
		if room, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/r/"), "/"); !validRoom(room) {
			status = http.StatusBadRequest
		}
		s.writePage(w, "room.html", status)
	}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, "/r/")
		if !ok || validRoom(rest) {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Add("Vary", "Accept")
		if r.Method == http.MethodGet && acceptsHTML(r.Header.Get("Accept")) {
			page.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// acceptsHTML reports whether an Accept header names text/html, as a
// browser's navigation does (*/* alone is not asking for a page).
func acceptsHTML(accept string) bool {
	for _, part := range strings.Split(accept, ",") {
		mediaType, _, _ := strings.Cut(part, ";")
		if strings.EqualFold(strings.TrimSpace(mediaType), "text/html") {
			return true
		}
	}
	return false
}

// handleStatic serves the files under /static/ from Config.Static.
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
