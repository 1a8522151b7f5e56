// Command ferretdb-test runs FerretDB v1 with its SQLite backend on a loopback port.
//
// It exists because `go install .../cmd/ferretdb@v1.24.2` builds a binary that panics at
// start (no version.txt in the module zip, FerretDB issue #2982); the embeddable package
// skips that check. The test suite starts this binary as a separate process.
//
// Usage: ferretdb-test -listen 127.0.0.1:27018 -dir /path/to/existing/dir
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

func main() {
	listen := flag.String("listen", "127.0.0.1:27018", "TCP address to listen on")
	dir := flag.String("dir", "", "SQLite data directory (created if missing)")
	logLevel := flag.String("log-level", "warn", "debug, info, warn or error")
	flag.Parse()

	if *dir == "" {
		fmt.Fprintln(os.Stderr, "ferretdb-test: -dir is required")
		os.Exit(2)
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb-test: bad -dir %q: %v\n", *dir, err)
		os.Exit(2)
	}
	// The SQLite handler refuses a directory that does not exist.
	if err := os.MkdirAll(abs, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb-test: cannot create -dir %q: %v\n", abs, err)
		os.Exit(2)
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb-test: bad -log-level %q\n", *logLevel)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Handler:   "sqlite",
		SQLiteURL: "file:" + abs + "/",
		Logger:    logger,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb-test: %v\n", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(os.Stderr, "ferretdb-test: listening on %s, data in %s\n", *listen, abs)
	if err := f.Run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb-test: %v\n", err)
		os.Exit(1)
	}
}
