package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"slices"
	"testing"
)

// The README's flag table lists exactly the flags that `tincan -h` lists.
func TestReadmeFlagTable(t *testing.T) {
	readme, err := os.ReadFile("README.md")
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
	// A row names one flag or several: | `-tls-cert`, `-tls-key` | …
	row := regexp.MustCompile("(?m)^\\| (`-[a-z0-9-]+`(?:, `-[a-z0-9-]+`)*) \\|")
	name := regexp.MustCompile("`-([a-z0-9-]+)`")
	var documented []string
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		for _, n := range name.FindAllStringSubmatch(m[1], -1) {
			documented = append(documented, n[1])
		}
	}
	if len(served) < 20 || len(documented) < 20 {
		t.Fatalf("found %d flags in -h and %d rows in the README: the patterns no longer match", len(served), len(documented))
	}
	for _, f := range served {
		if !slices.Contains(documented, f) {
			t.Errorf("-%s is a flag (-h lists it) but has no row in the README's flag table", f)
		}
	}
	for _, f := range documented {
		if !slices.Contains(served, f) {
			t.Errorf("the README's flag table has -%s, which -h does not list", f)
		}
	}
}
