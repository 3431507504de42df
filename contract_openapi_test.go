package main

// docs/openapi.yaml against the server as served: the document loads and
// validates as OpenAPI 3.1 (kin-openapi, JSON Schema 2020-12 for its
// schemas), names every route that handlers/ registers, and the real
// requests and answers of a running server (newTestServer) match it:
// every public route with its main refusals (TestOpenAPIPublic), and the
// admin API, join tokens and webhooks (TestOpenAPIAdmin).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/tincan/tincan/store"
)

const openAPIPath = "docs/openapi.yaml"

func init() {
	// The media types of the answers that are not JSON: their bodies are
	// checked as strings (the SSE head against its pattern).
	for _, ct := range []string{"text/event-stream", "text/html", "text/javascript", "application/javascript", "text/css"} {
		openapi3filter.RegisterBodyDecoder(ct, openapi3filter.PlainBodyDecoder)
	}
}

// openAPI is the loaded document and a router over it.
type openAPI struct {
	doc    *openapi3.T
	router routers.Router
}

var (
	openAPIOnce   sync.Once
	openAPILoaded *openAPI
	openAPIErr    error
)

// loadOpenAPI loads docs/openapi.yaml, validates it, and builds its router.
func loadOpenAPI(t testing.TB) *openAPI {
	t.Helper()
	openAPIOnce.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromFile(openAPIPath)
		if err != nil {
			openAPIErr = fmt.Errorf("load %s: %w", openAPIPath, err)
			return
		}
		if !doc.IsOpenAPI31OrLater() {
			openAPIErr = fmt.Errorf("%s is OpenAPI %s, want 3.1", openAPIPath, doc.OpenAPI)
			return
		}
		if err := doc.Validate(loader.Context, openapi3.EnableSchemaPatternValidation(), openapi3.EnableExamplesValidation()); err != nil {
			openAPIErr = fmt.Errorf("validate %s: %w", openAPIPath, err)
			return
		}
		router, err := gorillamux.NewRouter(doc)
		if err != nil {
			openAPIErr = fmt.Errorf("router: %w", err)
			return
		}
		openAPILoaded = &openAPI{doc: doc, router: router}
	})
	if openAPIErr != nil {
		t.Fatal(openAPIErr)
	}
	return openAPILoaded
}

// TestOpenAPIDocument: the document is valid OpenAPI 3.1, documents every
// route the handlers register (and no other), and its webhook events
// match the bodies the store makes.
func TestOpenAPIDocument(t *testing.T) {
	api := loadOpenAPI(t)

	served := servedRoutes(t)
	documented := map[string]bool{}
	for path, item := range api.doc.Paths.Map() {
		for method := range item.Operations() {
			if method == http.MethodOptions {
				continue // httprouter's own, on every path
			}
			documented[method+" "+normalizeRoute(path)] = true
		}
	}
	for r := range served {
		if !documented[r] {
			t.Errorf("route %s is served (handlers/*.go) but not in %s", r, openAPIPath)
		}
	}
	for r := range documented {
		if !served[r] {
			t.Errorf("route %s is in %s but not served (handlers/*.go)", r, openAPIPath)
		}
	}
	for path, item := range api.doc.Paths.Map() {
		if item.Options == nil {
			t.Errorf("%s: no options operation (httprouter answers OPTIONS on every path)", path)
		}
	}

	// Webhooks: one per event type, each body the store makes valid.
	for _, typ := range []string{store.EventRoomCreated, store.EventMemberJoined, store.EventMemberLeft, store.EventRoomClosed} {
		if api.doc.Webhooks[typ] == nil || api.doc.Webhooks[typ].Post == nil {
			t.Errorf("webhooks: no POST for %s", typ)
		}
	}
	now := time.Date(2026, 12, 6, 9, 10, 12, 345e6, time.UTC)
	for _, e := range []store.EventData{
		{Type: store.EventRoomCreated, Time: now, Room: "abc", Occupants: 1, Seq: 1},
		{Type: store.EventMemberJoined, Time: now, Room: "abc", ClientID: "q06SL_jB7euYaz22",
			Profile: store.Profile{Identity: "alice", Name: "Alice", Metadata: json.RawMessage(`{"role":"host"}`)}, Occupants: 1, Seq: 2},
		{Type: store.EventMemberJoined, Time: now, Room: "abc", ClientID: "hsVArCTbnunygrx1", Occupants: 2, Seq: 3},
		{Type: store.EventMemberLeft, Time: now, Room: "abc", ClientID: "hsVArCTbnunygrx1", Reason: "kicked", Occupants: 1, Seq: 4},
		{Type: store.EventRoomClosed, Time: now, Room: "abc", Reason: "closed", Occupants: 0, Seq: 5},
	} {
		body := store.EncodeEvent(e)
		if err := api.validateWebhookBody(e.Type, body); err != nil {
			t.Errorf("webhook body %s: %v", body, err)
		}
	}
	// And the schema refuses what is not an event.
	if err := api.validateWebhookBody(store.EventMemberLeft, []byte(`{"type":"member.left","timestamp":"2026-12-06T09:10:12Z","data":{"room":"abc","occupants":1,"seq":4}}`)); err == nil {
		t.Error("webhooks: a member.left without client_id and reason passes the schema")
	}
}

// servedRoutes reads the routes that handlers/*.go register on the
// httprouter (r.Handler("METHOD", "/path", …)), as "METHOD /path" with
// every parameter written {}.
func servedRoutes(t testing.TB) map[string]bool {
	t.Helper()
	files, err := filepath.Glob("handlers/*.go")
	if err != nil {
		t.Fatal(err)
	}
	call := regexp.MustCompile(`\br\.(?:Handler|HandlerFunc|Handle)\(\s*(?:"([A-Z]+)"|http\.Method(\w+))\s*,\s*"([^"]+)"`)
	short := regexp.MustCompile(`\br\.(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS)\(\s*"([^"]+)"`)
	routes := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range call.FindAllStringSubmatch(string(src), -1) {
			method := m[1]
			if method == "" {
				method = strings.ToUpper(m[2])
			}
			routes[method+" "+normalizeRoute(m[3])] = true
		}
		for _, m := range short.FindAllStringSubmatch(string(src), -1) {
			routes[m[1]+" "+normalizeRoute(m[2])] = true
		}
	}
	if len(routes) < 10 || !routes["POST /rooms/{}/join"] {
		t.Fatalf("read only these routes from handlers/*.go: %v", routes)
	}
	return routes
}

// normalizeRoute writes the parameters of an httprouter path (:name,
// *name) or an OpenAPI one ({name}) as {}.
func normalizeRoute(path string) string {
	return regexp.MustCompile(`\{[^}]*\}|:[^/]+|\*[^/]+`).ReplaceAllString(path, "{}")
}

// validateWebhookBody checks a webhook body against the document's webhook
// of its type.
func (api *openAPI) validateWebhookBody(typ string, body []byte) error {
	item := api.doc.Webhooks[typ]
	if item == nil || item.Post == nil || item.Post.RequestBody == nil {
		return fmt.Errorf("no webhook %s", typ)
	}
	mt := item.Post.RequestBody.Value.Content.Get("application/json")
	if mt == nil || mt.Schema == nil {
		return fmt.Errorf("webhook %s: no application/json schema", typ)
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return err
	}
	return mt.Schema.Value.VisitJSON(v, openapi3.EnableJSONSchema2020())
}

// validateComponentResponse checks an answer of no documented operation
// (an unknown path, a wrong method) against components.responses[name].
func (api *openAPI) validateComponentResponse(name string, a answer) error {
	ref := api.doc.Components.Responses[name]
	if ref == nil {
		return fmt.Errorf("no component response %s", name)
	}
	for h, hr := range ref.Value.Headers {
		if hr.Value.Required && a.Header.Get(h) == "" {
			return fmt.Errorf("header %s missing", h)
		}
	}
	ct := a.Header.Get("Content-Type")
	mt := ref.Value.Content.Get(ct)
	if mt == nil {
		return fmt.Errorf("Content-Type %q is not documented", ct)
	}
	var v any
	if err := json.Unmarshal(a.Body, &v); err != nil {
		return err
	}
	return mt.Schema.Value.VisitJSON(v, openapi3.EnableJSONSchema2020(), openapi3.VisitAsResponse())
}

// apiCall is one request of a contract test and what it must get.
type apiCall struct {
	name         string
	method, path string
	body         string
	header       []string // names and values in turn
	status       int      // the answer's status
	code         string   // the problem's code, for a refusal
	invalid      bool     // the request itself breaks the document (the server must refuse it)
	route        string   // for an answer of no operation: the component response it matches
	sse          bool     // an event stream: read up to the ready frame
}

// openAPIAuth checks the security schemes of a request as the document
// names them: a Bearer header, a JWT bearer (three parts), ?token=.
func openAPIAuth(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	r := in.RequestValidationInput.Request
	s := in.SecurityScheme
	switch s.Type {
	case "http":
		scheme, cred, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || cred == "" {
			return errors.New("no Bearer credential")
		}
		if isJWT := strings.Count(cred, ".") == 2; isJWT != (s.BearerFormat == "JWT") {
			return fmt.Errorf("Bearer credential is not of format %q", s.BearerFormat)
		}
	case "apiKey":
		if s.In != "query" || r.URL.Query().Get(s.Name) == "" {
			return fmt.Errorf("no %s in the %s", s.Name, s.In)
		}
	}
	return nil
}

// check sends c to srv, validating the request and the answer against the
// document, and returns the answer.
func (api *openAPI) check(t *testing.T, srv *testServer, c apiCall) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	newRequest := func() *http.Request {
		var body io.Reader
		if c.body != "" {
			body = strings.NewReader(c.body)
		}
		req, err := http.NewRequestWithContext(ctx, c.method, srv.URL()+c.path, body)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if c.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		setHeader(req, c.header)
		return req
	}

	// The request, against the document.
	req := newRequest()
	route, params, routeErr := api.router.FindRoute(req)
	var reqIn *openapi3filter.RequestValidationInput
	opts := &openapi3filter.Options{AuthenticationFunc: openAPIAuth, IncludeResponseStatus: true, MultiError: true}
	if routeErr == nil {
		reqIn = &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
		err := openapi3filter.ValidateRequest(ctx, reqIn)
		switch {
		case err != nil && !c.invalid:
			t.Errorf("%s: the request %s %s breaks the document: %v", c.name, c.method, c.path, err)
		case err == nil && c.invalid:
			t.Errorf("%s: the document admits the request %s %s, which the server refuses", c.name, c.method, c.path)
		}
	} else if c.route == "" {
		t.Errorf("%s: %s %s has no operation in the document: %v", c.name, c.method, c.path, routeErr)
	}

	// The answer.
	resp, err := srv.hc.Do(newRequest())
	if err != nil {
		t.Fatalf("%s: %s %s: %v", c.name, c.method, c.path, err)
	}
	defer resp.Body.Close()
	var data []byte
	if c.sse && resp.StatusCode == 200 {
		data = readUntilReady(t, resp.Body)
	} else if data, err = io.ReadAll(resp.Body); err != nil {
		t.Fatalf("%s: reading the answer: %v", c.name, err)
	}
	a := answer{Status: resp.StatusCode, Header: resp.Header, Body: data}
	if a.Status != c.status {
		t.Errorf("%s: %s %s: status %d, want %d: %s", c.name, c.method, c.path, a.Status, c.status, a.Body)
		return a
	}
	if c.code != "" {
		if code := a.problem(t); code != c.code {
			t.Errorf("%s: code %q, want %q: %s", c.name, code, c.code, a.Body)
		}
	}
	if c.route != "" {
		if err := api.validateComponentResponse(c.route, a); err != nil {
			t.Errorf("%s: the answer %d %s does not match components.responses.%s: %v", c.name, a.Status, a.Body, c.route, err)
		}
		return a
	}
	if reqIn == nil {
		return a
	}
	respIn := &openapi3filter.ResponseValidationInput{RequestValidationInput: reqIn, Status: a.Status, Header: a.Header, Options: opts}
	respIn.SetBodyBytes(a.Body)
	if err := openapi3filter.ValidateResponse(ctx, respIn); err != nil {
		t.Errorf("%s: the answer %d to %s %s does not match the document: %v\nbody: %.600s", c.name, a.Status, c.method, c.path, err, a.Body)
	}
	return a
}

// readUntilReady reads an event stream up to the end of its ready frame.
func readUntilReady(t *testing.T, body io.Reader) []byte {
	t.Helper()
	var out strings.Builder
	sc := bufio.NewScanner(body)
	ready := false
	for sc.Scan() {
		line := sc.Text()
		out.WriteString(line + "\n")
		if line == "event: ready" {
			ready = true
		}
		if line == "" && ready {
			return []byte(out.String())
		}
	}
	t.Fatalf("event stream ended before its ready frame: %q (%v)", out.String(), sc.Err())
	return nil
}

// TestOpenAPIPublic checks every public route, and its main refusals,
// against the document.
func TestOpenAPIPublic(t *testing.T) {
	api := loadOpenAPI(t)
	srv := newTestServer(t)
	bearer := func(c *client) []string { return c.auth() }
	join := func(room, body string, status int, header ...string) *client {
		t.Helper()
		a := api.check(t, srv, apiCall{name: "join " + room, method: "POST", path: "/rooms/" + room + "/join", body: body, header: header, status: status})
		if a.Status != status {
			t.FailNow()
		}
		c := &client{ep: srv.endpoint, Room: room}
		a.json(t, &c.joinAnswer)
		return c
	}

	a := join("oa", "", 201)
	b := join("oa", "{}", 201)
	other := join("elsewhere", `{"password":null}`, 201)
	join("oa", "", 200, bearer(a)...) // a resume

	sdp := `"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"`
	big := `{"type":"chat","text":"` + strings.Repeat("x", 70000) + `"}`
	calls := []apiCall{
		// Service routes and pages.
		{name: "healthz", method: "GET", path: "/healthz", status: 200},
		{name: "healthz HEAD", method: "HEAD", path: "/healthz", status: 200},
		{name: "metrics", method: "GET", path: "/metrics", status: 200},
		{name: "landing page", method: "GET", path: "/", status: 200},
		{name: "call page", method: "GET", path: "/r/oa", status: 200},
		{name: "call page, bad link, API client", method: "GET", path: "/r/bad.name", status: 400, code: "bad_room_name", invalid: true},
		{name: "call page, bad link, browser", method: "GET", path: "/r/bad.name", header: []string{"Accept", "text/html"}, status: 400, invalid: true},
		{name: "static file", method: "GET", path: "/static/tincan.js", status: 200},
		{name: "static file missing", method: "GET", path: "/static/nope.js", status: 404, code: "not_found"},
		{name: "options", method: "OPTIONS", path: "/rooms/oa/join", status: 200},

		// Rooms.
		{name: "room info", method: "GET", path: "/rooms/oa", status: 200},
		{name: "room info, unknown room", method: "GET", path: "/rooms/nobody-here", status: 200},
		{name: "room info, bad room name", method: "GET", path: "/rooms/bad.name", status: 400, code: "bad_room_name", invalid: true},
		{name: "join, bad room name", method: "POST", path: "/rooms/" + strings.Repeat("x", 65) + "/join", status: 400, code: "bad_room_name", invalid: true},
		{name: "join, bad JSON", method: "POST", path: "/rooms/oa2/join", body: `{"password":`, status: 400, code: "bad_json", invalid: true},
		{name: "join, unknown member", method: "POST", path: "/rooms/oa2/join", body: `{"pasword":"x"}`, status: 400, code: "bad_request", invalid: true},
		{name: "join, full room", method: "POST", path: "/rooms/oa/join", status: 409, code: "room_full"},
		{name: "join, locked room", method: "POST", path: "/rooms/locked/join", body: `{"password":"secret"}`, status: 201},
		{name: "join, password required", method: "POST", path: "/rooms/locked/join", status: 403, code: "password_required"},
		{name: "join, bad password", method: "POST", path: "/rooms/locked/join", body: `{"password":"wrong"}`, status: 403, code: "bad_password"},
		{name: "join, too large", method: "POST", path: "/rooms/oa2/join", body: `{"password":"` + strings.Repeat("x", 5000) + `"}`, status: 413, code: "too_large", invalid: true},

		// Posting.
		{name: "post", method: "POST", path: "/rooms/oa/messages", body: `{"type":"offer","sdp":` + sdp + `,"n":1.50}`, header: bearer(a), status: 201},
		{name: "post to a peer", method: "POST", path: "/rooms/oa/messages", body: `{"type":"chat","to":"` + b.ClientID + `"}`, header: bearer(a), status: 201},
		{name: "post a batch", method: "POST", path: "/rooms/oa/messages", header: append(bearer(a), "Idempotency-Key", "batch-1"), status: 201,
			body: `[{"type":"candidate","candidate":"candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host"},{"type":"candidate","candidate":null}]`},
		{name: "post a batch again", method: "POST", path: "/rooms/oa/messages", header: append(bearer(a), "Idempotency-Key", "batch-1"), status: 201,
			body: `[{"type":"candidate","candidate":null}]`},
		{name: "post, no token", method: "POST", path: "/rooms/oa/messages", body: `{"type":"bye"}`, status: 401, code: "unauthorized", invalid: true},
		{name: "post, unknown token", method: "POST", path: "/rooms/oa/messages", body: `{"type":"bye"}`, header: []string{"Authorization", "Bearer no-such-token"}, status: 401, code: "unauthorized"},
		{name: "post, token of another room", method: "POST", path: "/rooms/oa/messages", body: `{"type":"bye"}`, header: bearer(other), status: 403, code: "not_member"},
		{name: "post, bad JSON", method: "POST", path: "/rooms/oa/messages", body: `{"type":`, header: bearer(a), status: 400, code: "bad_json", invalid: true},
		{name: "post, bad message", method: "POST", path: "/rooms/oa/messages", body: `{"type":"offer"}`, header: bearer(a), status: 400, code: "bad_message", invalid: true},
		{name: "post, batch with a bad element", method: "POST", path: "/rooms/oa/messages", body: `[{"type":"bye"},{"type":"Bad"}]`, header: bearer(a), status: 400, code: "bad_message", invalid: true},
		{name: "post, empty batch", method: "POST", path: "/rooms/oa/messages", body: `[]`, header: bearer(a), status: 400, code: "bad_message", invalid: true},
		{name: "post, unknown peer", method: "POST", path: "/rooms/oa/messages", body: `{"type":"bye","to":"nobody"}`, header: bearer(a), status: 404, code: "unknown_peer"},
		{name: "post, unknown peer in a batch", method: "POST", path: "/rooms/oa/messages", body: `[{"type":"bye"},{"type":"bye","to":"nobody"}]`, header: bearer(a), status: 404, code: "unknown_peer"},
		{name: "post, long Idempotency-Key", method: "POST", path: "/rooms/oa/messages", body: `{"type":"bye"}`, header: append(bearer(a), "Idempotency-Key", strings.Repeat("k", 65)), status: 400, code: "bad_request", invalid: true},
		{name: "post, too large", method: "POST", path: "/rooms/oa/messages", body: big, header: bearer(a), status: 413, code: "too_large"},

		// Receiving.
		{name: "poll", method: "GET", path: "/rooms/oa/messages?since=0&wait=0", header: bearer(b), status: 200},
		{name: "poll, ?token=", method: "GET", path: "/rooms/oa/messages?wait=0.5&since=1&token=" + b.Token, status: 200},
		{name: "poll, bad cursor", method: "GET", path: "/rooms/oa/messages?since=x&wait=0", header: bearer(b), status: 400, code: "bad_request", invalid: true},
		{name: "poll, bad wait", method: "GET", path: "/rooms/oa/messages?wait=soon", header: bearer(b), status: 400, code: "bad_request", invalid: true},
		{name: "poll, no token", method: "GET", path: "/rooms/oa/messages?wait=0", status: 401, code: "unauthorized", invalid: true},
		{name: "events", method: "GET", path: "/rooms/oa/events?token=" + b.Token, status: 200, sse: true},
		{name: "events, Last-Event-ID", method: "GET", path: "/rooms/oa/events", header: append(bearer(b), "Last-Event-ID", "1"), status: 200, sse: true},
		{name: "events, bad Last-Event-ID", method: "GET", path: "/rooms/oa/events", header: append(bearer(b), "Last-Event-ID", "-1"), status: 400, code: "bad_request", invalid: true},
		{name: "events, unknown token", method: "GET", path: "/rooms/oa/events?token=nope", status: 401, code: "unauthorized"},

		// ICE servers.
		{name: "ice servers", method: "GET", path: "/ice-servers", header: bearer(a), status: 200},
		{name: "ice servers, ?token=", method: "GET", path: "/ice-servers?token=" + a.Token, status: 200},
		{name: "ice servers, no token", method: "GET", path: "/ice-servers", status: 401, code: "unauthorized", invalid: true},

		// Leave.
		{name: "leave", method: "POST", path: "/rooms/oa/leave?token=" + b.Token, status: 204},
		{name: "leave again", method: "POST", path: "/rooms/oa/leave", header: bearer(b), status: 401, code: "unauthorized"},
		{name: "post after leave", method: "POST", path: "/rooms/oa/messages", body: `{"type":"bye"}`, header: bearer(b), status: 401, code: "unauthorized"},

		// Answers of no operation.
		{name: "unknown path", method: "GET", path: "/nope", status: 404, code: "not_found", route: "NotFound"},
		{name: "below a room", method: "GET", path: "/rooms/oa/nope", status: 404, code: "not_found", route: "NotFound"},
		{name: "wrong method", method: "GET", path: "/rooms/oa/join", status: 405, code: "method_not_allowed", route: "MethodNotAllowed"},
		{name: "wrong method on a page", method: "POST", path: "/r/oa", status: 405, code: "method_not_allowed", route: "MethodNotAllowed"},
		{name: "no admin API", method: "GET", path: "/admin/v1/rooms", header: []string{"Authorization", "Bearer " + testAdminKey}, status: 404, code: "not_found"},
	}
	for _, c := range calls {
		api.check(t, srv, c)
	}

	// The poll answer holds what b was sent, in the delivered shape.
	p := api.check(t, srv, apiCall{name: "poll after", method: "GET", path: "/rooms/oa/messages?since=0&wait=0", header: bearer(a), status: 200})
	var pa pollAnswer
	p.json(t, &pa)
	if len(pa.Messages) == 0 {
		t.Errorf("a's poll has no messages (peer-joined, peer-left expected): %s", p.Body)
	}
}

// TestOpenAPIAdmin checks the admin API, join tokens (-auth jwt) and the
// webhook events against the document, on a server with all of them on.
func TestOpenAPIAdmin(t *testing.T) {
	api := loadOpenAPI(t)

	// A webhook receiver that keeps what it gets.
	var (
		hooksMu sync.Mutex
		hooks   []*http.Request
		bodies  [][]byte
	)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		hooksMu.Lock()
		hooks, bodies = append(hooks, r), append(bodies, body)
		hooksMu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer receiver.Close()

	srv := newTestServer(t,
		withEnv("TINCAN_AUTH", "jwt"), withEnv("TINCAN_JWT_SECRET", testJWTSecret), withEnv("TINCAN_ADMIN_KEY", testAdminKey),
		withEnv("TINCAN_WEBHOOK_URL", receiver.URL+"/hooks"), withEnv("TINCAN_WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
		withFlags("-room-capacity", "3"))
	admin := []string{"Authorization", "Bearer " + testAdminKey}
	jwtHeader := func(room, sub, name string, metadata any) []string {
		c := joinClaims(room, sub, name)
		if metadata != nil {
			c["metadata"] = metadata
		}
		return []string{"Authorization", "Bearer " + mintJWT(t, c)}
	}
	joinAs := func(room string, status int, header []string) *client {
		t.Helper()
		a := api.check(t, srv, apiCall{name: "JWT join " + room, method: "POST", path: "/rooms/" + room + "/join", header: header, status: status})
		if a.Status != status {
			t.FailNow()
		}
		c := &client{ep: srv.endpoint, Room: room}
		a.json(t, &c.joinAnswer)
		return c
	}

	// Join tokens.
	api.check(t, srv, apiCall{name: "join without a JWT", method: "POST", path: "/rooms/refused/join", status: 401, code: "jwt_required"})
	api.check(t, srv, apiCall{name: "join with a bad JWT", method: "POST", path: "/rooms/refused/join", header: []string{"Authorization", "Bearer a.b.c"}, status: 401, code: "bad_jwt"})
	api.check(t, srv, apiCall{name: "join with a JWT of another room", method: "POST", path: "/rooms/refused/join", header: jwtHeader("elsewhere", "eve", "", nil), status: 401, code: "bad_jwt"})
	alice := joinAs("apps", 201, jwtHeader("apps", "alice", "Alice", map[string]any{"role": "host"}))
	bob := joinAs("apps", 201, jwtHeader("apps", "bob", "", nil))
	carol := joinAs("apps", 201, jwtHeader("apps", "carol", "Carol", nil))
	var j appJoin
	api.check(t, srv, apiCall{name: "resume by member token", method: "POST", path: "/rooms/apps/join", header: carol.auth(), status: 200}).json(t, &j)
	if j.Identity != "" || len(j.Members) != 2 || j.Members[0].Identity != "alice" || j.Members[0].Name != "Alice" || string(j.Members[0].Metadata) != `{"role":"host"}` || j.Members[1].Identity != "bob" {
		t.Errorf("carol's resume: identity %q, members %+v", j.Identity, j.Members)
	}
	api.check(t, srv, apiCall{name: "resume by JWT", method: "POST", path: "/rooms/apps/join", header: jwtHeader("apps", "carol", "Carol", nil), status: 200}).json(t, &j)
	if j.Identity != "carol" || j.Name != "Carol" || j.ClientID != carol.ClientID {
		t.Errorf("carol's resume by JWT: %+v", j)
	}
	carol.Token = j.Token // the JWT resume gave a fresh one
	joinAs("other-apps", 201, jwtHeader("other-apps", "dave", "", nil))

	calls := []apiCall{
		{name: "list rooms", method: "GET", path: "/admin/v1/rooms", header: admin, status: 200},
		{name: "list rooms, a page", method: "GET", path: "/admin/v1/rooms?limit=1", header: admin, status: 200},
		{name: "list rooms, after", method: "GET", path: "/admin/v1/rooms?after=apps&limit=10", header: admin, status: 200},
		{name: "list rooms, bad limit", method: "GET", path: "/admin/v1/rooms?limit=0", header: admin, status: 400, code: "bad_request", invalid: true},
		{name: "list rooms, no key", method: "GET", path: "/admin/v1/rooms", status: 401, code: "unauthorized", invalid: true},
		{name: "list rooms, wrong key", method: "GET", path: "/admin/v1/rooms", header: []string{"Authorization", "Bearer wrong-key-wrong-key"}, status: 401, code: "unauthorized"},
		{name: "room", method: "GET", path: "/admin/v1/rooms/apps", header: admin, status: 200},
		{name: "room, unknown", method: "GET", path: "/admin/v1/rooms/nobody-here", header: admin, status: 404, code: "not_found"},
		{name: "room, bad name", method: "GET", path: "/admin/v1/rooms/bad.name", header: admin, status: 400, code: "bad_room_name", invalid: true},
		{name: "server post", method: "POST", path: "/admin/v1/rooms/apps/messages", body: `{"type":"notice","text":"hello"}`, header: admin, status: 201},
		{name: "server post to one", method: "POST", path: "/admin/v1/rooms/apps/messages", body: `{"type":"notice","to":"` + alice.ClientID + `"}`, header: append(admin, "Idempotency-Key", "srv-1"), status: 201},
		{name: "server batch", method: "POST", path: "/admin/v1/rooms/apps/messages", body: `[{"type":"notice"},{"type":"notice","to":"` + bob.ClientID + `"}]`, header: admin, status: 201},
		{name: "server post, unknown peer", method: "POST", path: "/admin/v1/rooms/apps/messages", body: `{"type":"notice","to":"nobody"}`, header: admin, status: 404, code: "unknown_peer"},
		{name: "server post, bad message", method: "POST", path: "/admin/v1/rooms/apps/messages", body: `{"text":"no type"}`, header: admin, status: 400, code: "bad_message", invalid: true},
		{name: "server post, unknown room", method: "POST", path: "/admin/v1/rooms/nobody-here/messages", body: `{"type":"notice"}`, header: admin, status: 404, code: "not_found"},
		{name: "poll, server messages", method: "GET", path: "/rooms/apps/messages?wait=0", header: alice.auth(), status: 200},
		{name: "kick", method: "DELETE", path: "/admin/v1/rooms/apps/members/" + bob.ClientID, header: admin, status: 204},
		{name: "kick, unknown member", method: "DELETE", path: "/admin/v1/rooms/apps/members/nobody", header: admin, status: 404, code: "not_found"},
		{name: "kicked member posts", method: "POST", path: "/rooms/apps/messages", body: `{"type":"bye"}`, header: bob.auth(), status: 401, code: "kicked"},
		{name: "kicked member polls", method: "GET", path: "/rooms/apps/messages?wait=0", header: bob.auth(), status: 401, code: "kicked"},
		{name: "close", method: "DELETE", path: "/admin/v1/rooms/apps", header: admin, status: 204},
		{name: "close, unknown room", method: "DELETE", path: "/admin/v1/rooms/nobody-here", header: admin, status: 404, code: "not_found"},
		{name: "member of a closed room", method: "GET", path: "/rooms/apps/events?token=" + alice.Token, status: 401, code: "room_closed"},
		{name: "member of a closed room, ice servers", method: "GET", path: "/ice-servers", header: carol.auth(), status: 401, code: "room_closed"},
		{name: "admin, wrong method", method: "PUT", path: "/admin/v1/rooms/apps", header: admin, status: 405, code: "method_not_allowed", route: "MethodNotAllowed"},
	}
	for _, c := range calls {
		api.check(t, srv, c)
	}

	// The webhooks of all that, against the document's webhooks.
	want := map[string]bool{store.EventRoomCreated: true, store.EventMemberJoined: true, store.EventMemberLeft: true, store.EventRoomClosed: true}
	deadline := time.Now().Add(15 * time.Second)
	for {
		hooksMu.Lock()
		seen := map[string]bool{}
		for _, b := range bodies {
			var e struct{ Type string }
			json.Unmarshal(b, &e)
			seen[e.Type] = true
		}
		n := len(bodies)
		hooksMu.Unlock()
		if len(seen) == len(want) || time.Now().After(deadline) {
			if len(seen) != len(want) {
				t.Errorf("webhooks: got %d events of types %v, want every one of %v", n, sortedKeys(seen), sortedKeys(want))
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	hooksMu.Lock()
	defer hooksMu.Unlock()
	for i, r := range hooks {
		var e struct{ Type string }
		json.Unmarshal(bodies[i], &e)
		if err := api.validateWebhookBody(e.Type, bodies[i]); err != nil {
			t.Errorf("webhook %s: %v", bodies[i], err)
		}
		item := api.doc.Webhooks[e.Type]
		if item == nil || item.Post == nil {
			continue
		}
		for _, p := range item.Post.Parameters {
			if p.Value.In != "header" {
				continue
			}
			v := r.Header.Get(p.Value.Name)
			if v == "" {
				if p.Value.Required {
					t.Errorf("webhook %s: no header %s", e.Type, p.Value.Name)
				}
				continue
			}
			if err := p.Value.Schema.Value.VisitJSON(v, openapi3.EnableJSONSchema2020()); err != nil {
				t.Errorf("webhook %s: header %s %q: %v", e.Type, p.Value.Name, v, err)
			}
		}
		if ct := r.Header.Get("Content-Type"); item.Post.RequestBody.Value.Content.Get(ct) == nil {
			t.Errorf("webhook %s: Content-Type %q not documented", e.Type, ct)
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return slices.Clip(keys)
}
