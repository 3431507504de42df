package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The code of the README's "In your app" section works as printed: the
// Node.js joinToken mints a token that a server with -auth jwt takes, the
// Go joinToken compiles and does the same, and the Node.js verifyWebhook
// accepts a real delivery of a real server and refuses it tampered with.
// The snippets run in the real node and go; without node the test fails.

// readmeAppsBlocks returns the fenced code blocks of the README's
// "## In your app" section: language and text.
func readmeAppsBlocks(t *testing.T) (blocks [][2]string) {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	start := strings.Index(text, "\n## In your app\n")
	if start < 0 {
		t.Fatal(`README.md has no "## In your app" section`)
	}
	section := text[start+1:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	fence := regexp.MustCompile("(?ms)^```([a-z]*)\n(.*?)^```$")
	for _, m := range fence.FindAllStringSubmatch(section, -1) {
		blocks = append(blocks, [2]string{m[1], m[2]})
	}
	return blocks
}

// readmeAppsSnippet is the one block of language lang that has marker.
func readmeAppsSnippet(t *testing.T, lang, marker string) string {
	t.Helper()
	var found []string
	for _, b := range readmeAppsBlocks(t) {
		if b[0] == lang && strings.Contains(b[1], marker) {
			found = append(found, b[1])
		}
	}
	if len(found) != 1 {
		t.Fatalf("README.md's \"In your app\" has %d ```%s blocks with %q, want 1", len(found), lang, marker)
	}
	return found[0]
}

// runNode runs script in the real node with stdin and returns its trimmed
// stdout; node missing fails the test.
func runNode(t *testing.T, script, stdin string, args ...string) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("this test runs the README's JavaScript in Node.js, and there is no node on PATH (apt-get install -y nodejs): %v", err)
	}
	path := filepath.Join(t.TempDir(), "snippet.js")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append([]string{path}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node %s: %v\nstderr:\n%s\nscript:\n%s", path, err, stderr.String(), script)
	}
	return strings.TrimSpace(stdout.String())
}

func TestReadmeAppsJoinTokenNode(t *testing.T) {
	snippet := readmeAppsSnippet(t, "js", "function joinToken(")
	srv := newTestServer(t, withEnv("TINCAN_AUTH", "jwt"), withEnv("TINCAN_JWT_SECRET", testJWTSecret))
	room := "readme-node"
	token := runNode(t, snippet+`
const [secret, room, userId, name] = process.argv.slice(2);
console.log(joinToken(secret, room, userId, name));
`, "", testJWTSecret, room, "alice", "Alice")
	_, j := jwtJoin(t, srv.endpoint, room, token, 201)
	if j.Identity != "alice" || j.Name != "Alice" {
		t.Fatalf("the join with the README's Node.js token: identity %q name %q, want alice Alice", j.Identity, j.Name)
	}
	// Signed with another secret, the same code's token is refused.
	other := runNode(t, snippet+`console.log(joinToken("not-the-server-secret-not-the-server-secret", "readme-node", "eve", "Eve"));`, "")
	if a := srv.do(t, "POST", "/rooms/"+room+"/join", "", "Authorization", "Bearer "+other); a.Status != 401 || a.problem(t) != "bad_jwt" {
		t.Fatalf("a token of another secret: %d %s, want 401 bad_jwt", a.Status, a.Body)
	}
}

// The Go joinToken is compiled and run in a module of its own (a copy of
// this module's go.mod requirements and go.sum, no network), and the token
// it prints joins a real server.
func TestReadmeAppsJoinTokenGo(t *testing.T) {
	snippet := readmeAppsSnippet(t, "go", "func joinToken(")
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go on PATH: %v", err)
	}
	gomod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	gosum, err := os.ReadFile("go.sum")
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go \S+$`).Find(gomod)
	jwtLine := regexp.MustCompile(`(?m)^\s*github\.com/golang-jwt/jwt/v5 \S+`).Find(gomod)
	if goLine == nil || jwtLine == nil {
		t.Fatalf("go.mod has no go line or no golang-jwt/jwt/v5 requirement:\n%s", gomod)
	}
	dir := t.TempDir()
	files := map[string]string{
		"go.mod": "module readmeapps\n\n" + string(goLine) + "\n\nrequire " + strings.TrimSpace(string(jwtLine)) + "\n",
		"go.sum": string(gosum),
		"main.go": `package main

import (
	"fmt"
	"os"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// From README.md, as printed:
` + snippet + `
func main() {
	s, err := joinToken([]byte(os.Args[1]), os.Args[2], os.Args[3], os.Args[4])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(s)
}
`,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := filepath.Join(dir, "readmeapps")
	build := exec.CommandContext(ctx, goBin, "build", "-mod=mod", "-o", bin, ".")
	build.Dir = dir
	build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=", "GOPROXY=off", "GOTOOLCHAIN=local")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("the README's Go joinToken does not build: %v\n%s\nmain.go:\n%s", err, out, files["main.go"])
	}
	out, err := exec.CommandContext(ctx, bin, testJWTSecret, "readme-go", "alice", "Alice").Output()
	if err != nil {
		t.Fatalf("running the README's Go joinToken: %v", err)
	}
	srv := newTestServer(t, withEnv("TINCAN_AUTH", "jwt"), withEnv("TINCAN_JWT_SECRET", testJWTSecret))
	_, j := jwtJoin(t, srv.endpoint, "readme-go", strings.TrimSpace(string(out)), 201)
	if j.Identity != "alice" || j.Name != "Alice" {
		t.Fatalf("the join with the README's Go token: identity %q name %q, want alice Alice", j.Identity, j.Name)
	}
}

// delivery is a webhook request as the receiver got it.
type delivery struct {
	header http.Header
	body   []byte
}

func TestReadmeAppsVerifyWebhookNode(t *testing.T) {
	snippet := readmeAppsSnippet(t, "js", "function verifyWebhook(")
	deliveries := make(chan delivery, 16)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(500)
			return
		}
		select {
		case deliveries <- delivery{r.Header.Clone(), body}:
		default:
		}
		w.WriteHeader(204)
	}))
	t.Cleanup(hook.Close)
	srv := newTestServer(t, withEnv("TINCAN_WEBHOOK_URL", hook.URL+"/hooks"), withEnv("TINCAN_WEBHOOK_SECRET", testWebhookSecret))
	srv.join(t, "readme-hook", 201)
	var d delivery
	select {
	case d = <-deliveries:
	case <-time.After(20 * time.Second):
		t.Fatal("no webhook delivery within 20 s of a join")
	}
	// The request is real: the test's own verifier agrees before node is asked.
	if err := verifyStandardWebhook(testWebhookSecret, d.header, d.body); err != nil {
		t.Fatalf("the delivery does not verify with verifyStandardWebhook: %v", err)
	}

	// Node's http lowercases header names and joins repeated ones with ", ".
	verify := func(body []byte) string {
		headers := map[string]string{}
		for name, values := range d.header {
			headers[strings.ToLower(name)] = strings.Join(values, ", ")
		}
		in, err := json.Marshal(map[string]any{"secret": testWebhookSecret, "headers": headers, "body": string(body)})
		if err != nil {
			t.Fatal(err)
		}
		return runNode(t, snippet+`
const input = JSON.parse(require("node:fs").readFileSync(0, "utf8"));
console.log(JSON.stringify(verifyWebhook(input.secret, input.headers, input.body)));
`, string(in))
	}
	if got := verify(d.body); got != "true" {
		t.Fatalf("the README's verifyWebhook on a real delivery (headers %v, body %s): %s, want true", d.header, d.body, got)
	}
	tampered := bytes.Replace(d.body, []byte(`"readme-hook"`), []byte(`"readme-hoox"`), 1)
	if bytes.Equal(tampered, d.body) {
		t.Fatalf("the delivery's body does not name the room: %s", d.body)
	}
	if got := verify(tampered); got != "false" {
		t.Fatalf("the README's verifyWebhook on a tampered body %s: %s, want false", tampered, got)
	}
}
