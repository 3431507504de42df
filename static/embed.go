// Package static holds the web page and the tincan.js client, embedded in the binary.
package static

import "embed"

// FS holds index.html (the landing page), room.html (the call page at /r/{room}),
// and the scripts and style sheet the server serves under /static/.
//
//go:embed index.html room.html app.js landing.js tincan.js style.css
var FS embed.FS
