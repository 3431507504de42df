package main

// The npm package tincan-client (clients/js) and the file the server serves
// at /static/tincan.js are one client: static/tincan.js is a copy of
// clients/js/src/tincan.js, byte for byte. Edit the package's file and copy
// it: cp clients/js/src/tincan.js static/tincan.js
//
// The package's build for a plain <script> tag, clients/js/dist/tincan.iife.js,
// is made from the same file (cd clients/js && npm run build) and committed.

import (
	"bytes"
	"os"
	"regexp"
	"testing"

	"github.com/tincan/tincan/static"
)

func TestJSClientIsOneFile(t *testing.T) {
	pkg, err := os.ReadFile("clients/js/src/tincan.js")
	if err != nil {
		t.Fatal(err)
	}
	served, err := os.ReadFile("static/tincan.js")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pkg, served) {
		t.Fatalf("static/tincan.js (%d bytes) differs from clients/js/src/tincan.js (%d bytes), the one source of the client: run\n\tcp clients/js/src/tincan.js static/tincan.js", len(served), len(pkg))
	}
	embedded, err := static.FS.ReadFile("tincan.js")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pkg, embedded) {
		t.Fatal("the embedded tincan.js differs from clients/js/src/tincan.js")
	}
}

// What the server answers at /static/tincan.js is the package's file.
func TestJSClientServedIsThePackage(t *testing.T) {
	pkg, err := os.ReadFile("clients/js/src/tincan.js")
	if err != nil {
		t.Fatal(err)
	}
	srv := newTestServer(t)
	a := srv.do(t, "GET", "/static/tincan.js", "")
	if a.Status != 200 || !bytes.Equal(a.Body, pkg) {
		t.Fatalf("GET /static/tincan.js: %d, %d bytes; want the package's %d", a.Status, len(a.Body), len(pkg))
	}
}

// The <script> build holds the package's file, its exports turned into
// plain declarations (clients/js/scripts/build-iife.js; its Node test and
// `build-iife.js --check` compare the whole file).
func TestJSClientIIFEIsBuiltFromThePackage(t *testing.T) {
	pkg, err := os.ReadFile("clients/js/src/tincan.js")
	if err != nil {
		t.Fatal(err)
	}
	iife, err := os.ReadFile("clients/js/dist/tincan.iife.js")
	if err != nil {
		t.Fatal(err)
	}
	body := regexp.MustCompile(`(?m)^export (class|async function|function|const|let) `).ReplaceAll(bytes.TrimRight(pkg, "\n"), []byte("$1 "))
	if !bytes.Contains(iife, body) {
		t.Fatal("clients/js/dist/tincan.iife.js is not built from clients/js/src/tincan.js: run\n\tcd clients/js && npm run build")
	}
	if !bytes.Contains(iife, []byte("globalThis.tincan = {")) {
		t.Fatal("clients/js/dist/tincan.iife.js does not define globalThis.tincan")
	}
}
