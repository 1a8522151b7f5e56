// Command ferretdb-test runs FerretDB v1 on a loopback port, with its PostgreSQL backend
// (the integration lane's default, as in production-like use) or its SQLite backend
// (development only: it evaluates every filter but a bare _id equality row by row in Go).
//
// It exists because `go install .../cmd/ferretdb@v1.24.2` builds a binary that panics at
// start (no version.txt in the module zip, FerretDB issue #2982); the embeddable package
// skips that check. The test suite starts this binary as a separate process.
//
// Usage:
//
//	ferretdb-test -listen 127.0.0.1:27018 -postgresql-url postgres://user@127.0.0.1:5432/ferretdb
//	ferretdb-test -listen 127.0.0.1:27018 -dir /path/to/dir    (SQLite)
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "ferretdb-test: "+format+"\n", args...)
	os.Exit(code)
}

// sqliteURL makes the data directory (the SQLite handler refuses one that does not exist).
func sqliteURL(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		fail(2, "bad -dir %q: %v", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		fail(2, "cannot create -dir %q: %v", abs, err)
	}
	return "file:" + abs + "/"
}

func main() {
	listen := flag.String("listen", "127.0.0.1:27018", "TCP address to listen on")
	dir := flag.String("dir", "", "SQLite backend: data directory (created if missing)")
	pgURL := flag.String("postgresql-url", "", "PostgreSQL backend: postgres://user@host:port/database")
	logLevel := flag.String("log-level", "warn", "debug, info, warn or error")
	flag.Parse()

	config := ferretdb.Config{Listener: ferretdb.ListenerConfig{TCP: *listen}}
	switch {
	case *pgURL != "" && *dir != "":
		fail(2, "give -postgresql-url or -dir, not both")
	case *pgURL != "":
		config.Handler, config.PostgreSQLURL = "postgresql", *pgURL
	case *dir != "":
		config.Handler, config.SQLiteURL = "sqlite", sqliteURL(*dir)
	default:
		fail(2, "-postgresql-url or -dir is required")
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fail(2, "bad -log-level %q", *logLevel)
	}
	config.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	f, err := ferretdb.New(&config)
	if err != nil {
		fail(1, "%v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(os.Stderr, "ferretdb-test: %s backend, listening on %s\n", config.Handler, *listen)
	if err := f.Run(ctx); err != nil {
		fail(1, "%v", err)
	}
}
