package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
)

// flagsDoc is the one page with the full flag table; the README and the
// other pages link it.
const flagsDoc = "docs/cli.md"

// flagTableRow is a row of a flag table; it names one flag or several:
// | `-tls-cert`, `-tls-key` | …
var flagTableRow = regexp.MustCompile("(?m)^\\| (`-[a-z0-9-]+`(?:, `-[a-z0-9-]+`)*) \\|")

// The flag table of docs/cli.md lists exactly the flags that `tincan -h`
// lists, and no other Markdown page of the repository has a flag table
// (but for the wire contract's, which lists what the contract requires).
func TestReadmeFlagTable(t *testing.T) {
	doc, err := os.ReadFile(flagsDoc)
	if err != nil {
		t.Fatal(err)
	}
	var stdout, usage bytes.Buffer
	if err := run(context.Background(), []string{"tincan", "-h"}, func(string) string { return "" }, &stdout, &usage); err != nil {
		t.Fatalf("-h: %v", err)
	}
	flagLine := regexp.MustCompile("(?m)^  -([a-z0-9-]+)")
	var served []string
	for _, m := range flagLine.FindAllStringSubmatch(usage.String(), -1) {
		served = append(served, m[1])
	}
	name := regexp.MustCompile("`-([a-z0-9-]+)`")
	var documented []string
	for _, m := range flagTableRow.FindAllStringSubmatch(string(doc), -1) {
		for _, n := range name.FindAllStringSubmatch(m[1], -1) {
			documented = append(documented, n[1])
		}
	}
	if len(served) < 20 || len(documented) < 20 {
		t.Fatalf("found %d flags in -h and %d rows in %s: the patterns no longer match", len(served), len(documented), flagsDoc)
	}
	for _, f := range served {
		if !slices.Contains(documented, f) {
			t.Errorf("-%s is a flag (-h lists it) but has no row in the flag table of %s", f, flagsDoc)
		}
	}
	for _, f := range documented {
		if !slices.Contains(served, f) {
			t.Errorf("the flag table of %s has -%s, which -h does not list", flagsDoc, f)
		}
	}
	for _, f := range docFiles(t) {
		// The wire contract lists the flags it requires of any server, a
		// fixed subset: a specification, not this server's list.
		if f := filepath.ToSlash(f); f == flagsDoc || f == "docs/api-contract.md" {
			continue
		}
		other, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if rows := flagTableRow.FindAllString(string(other), -1); len(rows) > 0 {
			t.Errorf("%s has flag table rows (%q…); the flag table is in %s alone: link it", f, rows[0], flagsDoc)
		}
	}
}
