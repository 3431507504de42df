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
