package logbuf

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkAuditRecord writes one ws_connected audit record (as the text
// handler formats it) to a file, as serve writes to standard error
// redirected to a log file: direct is a write system call per record,
// buffered gathers them for DefaultInterval.
func BenchmarkAuditRecord(b *testing.B) {
	rec := []byte(`time=2026-12-02T00:01:56.598Z level=INFO msg=audit audit=true event=ws_connected session_id=8dbeJAudSluHgfBYsT user_id=user6156 connection_id=i9UMfhjAuUQO85k1 ip=127.0.0.2 user_agent=Go-http-client/1.1 method=session source=header` + "\n")
	for _, mode := range []string{"direct", "buffered"} {
		b.Run(mode, func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "log"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			var w io.WriteCloser = nopCloser{f}
			if mode == "buffered" {
				w = New(f, DefaultInterval, 0)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := w.Write(rec); err != nil {
					b.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}
