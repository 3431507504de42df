package main

// The documentation's links: every relative link in the Markdown files of
// the repository's root and of docs/ must reach a file of the repository
// (and, with a #fragment into a Markdown file, one of its headings). A
// link that climbs out of the repository, or a root-absolute one (which
// GitHub resolves against its own site), is refused.

import (
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// docLink is one link found in a Markdown file.
type docLink struct {
	File   string // the file it is in, relative to the repository root
	Line   int
	Target string // as written
}

var (
	// [text](target) and ![alt](target), target up to a space (a title
	// may follow) or the closing parenthesis.
	inlineLink = regexp.MustCompile(`!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	// [label]: target
	referenceLink = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)`)
	// href="…" and src="…" of inline HTML
	htmlLink = regexp.MustCompile(`(?:href|src)\s*=\s*"([^"]*)"`)
	// <a name="…"> and id="…" anchors of inline HTML
	htmlAnchor = regexp.MustCompile(`(?:name|id)\s*=\s*"([^"]*)"`)
	codeSpan   = regexp.MustCompile("`+[^`]*`+")
	heading    = regexp.MustCompile(`^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$`)
)

// markdown is a Markdown file read for its links and its anchors.
type markdown struct {
	links   []docLink
	anchors map[string]bool // the fragments its headings and HTML anchors define
}

// readMarkdown reads the links and anchors of the file at root/name,
// outside fenced code blocks and code spans (indented code blocks are
// not told apart: the repository's files fence their code).
func readMarkdown(t *testing.T, root, name string) markdown {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, name))
	if err != nil {
		t.Fatal(err)
	}
	md := markdown{anchors: map[string]bool{}}
	seen := map[string]int{}
	fence := ""
	for i, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			continue
		}
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fence = trimmed[:3]
			continue
		}
		if m := heading.FindStringSubmatch(line); m != nil {
			slug := headingSlug(m[1])
			if n := seen[slug]; n > 0 {
				md.anchors[slug+"-"+strconv.Itoa(n)] = true
			} else {
				md.anchors[slug] = true
			}
			seen[slug]++
		}
		for _, m := range htmlAnchor.FindAllStringSubmatch(line, -1) {
			md.anchors[m[1]] = true
		}
		text := codeSpan.ReplaceAllString(line, "")
		for _, re := range []*regexp.Regexp{inlineLink, referenceLink, htmlLink} {
			for _, m := range re.FindAllStringSubmatch(text, -1) {
				md.links = append(md.links, docLink{File: name, Line: i + 1, Target: m[1]})
			}
		}
	}
	return md
}

// headingSlug is the fragment GitHub makes of a heading: its text in
// lower case, without the Markdown around words and without punctuation
// but for hyphens and underscores, spaces turned into hyphens.
func headingSlug(text string) string {
	text = inlineLink.ReplaceAllStringFunc(text, func(link string) string {
		return link[strings.IndexByte(link, '[')+1 : strings.IndexByte(link, ']')]
	})
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// docFiles are the Markdown files whose links are checked: those at the
// repository's root and under docs/.
func docFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, pattern := range []string{"*.md", "docs/*.md"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if !slices.Contains(files, "README.md") || !slices.Contains(files, filepath.Join("docs", "api.md")) {
		t.Fatalf("found %v: README.md and docs/api.md must be among them", files)
	}
	return files
}

// TestDocLinks fails on a relative link in README.md, docs/*.md or the
// other Markdown files at the root that names no file of the repository,
// climbs out of it, or names a heading its file does not have.
func TestDocLinks(t *testing.T) {
	root, err := os.Getwd() // the package directory: the repository's root
	if err != nil {
		t.Fatal(err)
	}
	files := docFiles(t)
	docs := map[string]markdown{}
	for _, f := range files {
		docs[filepath.ToSlash(f)] = readMarkdown(t, root, f)
	}
	checked := 0
	for _, f := range files {
		for _, l := range docs[filepath.ToSlash(f)].links {
			if problem := checkLink(root, l, docs); problem != "" {
				t.Errorf("%s:%d: link %q: %s", l.File, l.Line, l.Target, problem)
			}
			checked++
		}
	}
	if checked < 10 {
		t.Errorf("only %d links found in %v: is the parser broken?", checked, files)
	}
}

// checkLink says what is wrong with a link ("" for nothing). Links with a
// scheme (https:, mailto:) leave the repository on purpose and are not
// checked.
func checkLink(root string, l docLink, docs map[string]markdown) string {
	u, err := url.Parse(l.Target)
	if err != nil {
		return "not a URL: " + err.Error()
	}
	if u.Scheme != "" || u.Host != "" {
		return ""
	}
	if strings.HasPrefix(u.Path, "/") {
		return "a root-absolute path: on GitHub it leaves the repository; write it relative to " + l.File
	}
	target := filepath.ToSlash(l.File)
	if u.Path != "" {
		target = filepath.ToSlash(filepath.Join(filepath.Dir(l.File), filepath.FromSlash(u.Path)))
		if target == ".." || strings.HasPrefix(target, "../") {
			return "points outside the repository"
		}
		if target == ".git" || strings.HasPrefix(target, ".git/") {
			return "points into .git"
		}
		if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(target))); err != nil {
			return "no such file in the repository: " + target
		}
	}
	if u.Fragment == "" || !strings.HasSuffix(target, ".md") {
		return ""
	}
	md, ok := docs[target]
	if !ok {
		return "" // a Markdown file elsewhere: its headings are not read
	}
	if !md.anchors[u.Fragment] {
		return "no heading #" + u.Fragment + " in " + target
	}
	return ""
}

// TestDocLinksCatches holds the checker to the links it must refuse and
// those it must let pass, on a Markdown file made for it.
func TestDocLinksCatches(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "docs"), 0o755); err != nil {
		t.Fatal(err)
	}
	page := strings.Join([]string{
		"# A page",
		"## Second heading: with `code`, punctuation!",
		"[ok](docs/other.md) [ok](#a-page) [ok](#second-heading-with-code-punctuation)",
		"[ok](https://example.com/x) ![ok](docs/other.md#other) [ok](docs/other.md?plain=1)",
		"`[in code](missing.md)`",
		"```",
		"[in a fence](missing.md)",
		"```",
		"[bad1](missing.md) [bad2](../outside.md) [bad3](/docs/other.md)",
		"[bad4](#no-such-heading) [bad5](docs/other.md#nowhere) <a href=\"docs/gone.md\">bad6</a>",
		"[bad7]: docs/gone-too.md",
	}, "\n")
	for name, text := range map[string]string{"README.md": page, "docs/other.md": "# Other\n[ok](../README.md#a-page) [bad8](../../up.md)\n"} {
		if err := os.WriteFile(filepath.Join(root, filepath.FromSlash(name)), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	docs := map[string]markdown{}
	for _, name := range []string{"README.md", "docs/other.md"} {
		docs[name] = readMarkdown(t, root, filepath.FromSlash(name))
	}
	var refused []string
	passed := 0
	for _, name := range []string{"README.md", "docs/other.md"} {
		for _, l := range docs[name].links {
			if checkLink(root, l, docs) != "" {
				refused = append(refused, l.Target)
			} else {
				passed++
			}
		}
	}
	want := []string{"missing.md", "../outside.md", "/docs/other.md", "#no-such-heading", "docs/other.md#nowhere",
		"docs/gone.md", "docs/gone-too.md", "../../up.md"}
	if !slices.Equal(refused, want) {
		t.Errorf("refused %q, want %q", refused, want)
	}
	if passed != 7 {
		t.Errorf("%d links passed, want 7", passed)
	}
}
