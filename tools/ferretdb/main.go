// Command ferretdb-shim runs FerretDB (embedded, SQLite or PostgreSQL backend) as
// the local MongoDB-compatible server for ./scripts/services when no mongod is
// installed, and checks that a MongoDB wire server answers.
//
// Why a shim: `go install` of FerretDB's own command panics for lack of the
// version file its build normally generates, while the embeddable package
// github.com/FerretDB/FerretDB/ferretdb needs nothing but a Config.
//
// Usage:
//
//	ferretdb-shim serve --listen-addr 127.0.0.1:27017 [--backend sqlite] --sqlite-dir DIR [--log-level info]
//	ferretdb-shim serve --listen-addr 127.0.0.1:27017 --backend postgresql --postgresql-url URL [--pid-file PATH]
//	ferretdb-shim ping  --uri mongodb://127.0.0.1:27017 [--timeout 2s]
//
// PostgreSQL backend: every MongoDB database is a PostgreSQL schema of the
// database named in the URL (which must exist), every collection a table of
// one jsonb column. The URL may carry pgxpool settings such as
// pool_max_conns (FerretDB's default is 50). Only one FerretDB may use a given
// PostgreSQL database at a time: each caches the collection and index list in
// memory, loaded once at its first request. See docs/ferretdb.md.
//
// Telemetry: ferretdb.Config has no telemetry setting because the embedded
// package never creates a telemetry reporter; ferretdb.New also disables and
// locks telemetry in its (in-memory) state provider. Nothing is sent anywhere.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}

	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "ping":
		err = ping(os.Args[2:])
	case "-h", "--help", "help":
		usage()
		return
	default:
		usage()
		os.Exit(2)
	}

	if err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb-shim %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: ferretdb-shim serve [--listen-addr ADDR] [--backend sqlite] --sqlite-dir DIR [--sqlite-synchronous normal|full] [--log-level LEVEL]")
	fmt.Fprintln(os.Stderr, "       ferretdb-shim serve [--listen-addr ADDR] --backend postgresql --postgresql-url URL [--log-level LEVEL]")
	fmt.Fprintln(os.Stderr, "       (both: [--pid-file PATH])")
	fmt.Fprintln(os.Stderr, "       ferretdb-shim ping [--uri URI] [--timeout DURATION]")
}

// serve runs FerretDB until SIGINT or SIGTERM.
func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listenAddr := fs.String("listen-addr", "127.0.0.1:27017", "TCP address to listen on")
	backend := fs.String("backend", "sqlite", "storage backend: sqlite or postgresql")
	sqliteDir := fs.String("sqlite-dir", "", "sqlite: directory holding one SQLite file per database (required)")
	// SQLite's synchronous setting. FerretDB runs SQLite in WAL mode, where "normal" survives a
	// crash of the process (only a power loss can lose the last commits) and does not fsync on
	// every commit, as the default "full" does: several times the write rate of a local server.
	synchronous := fs.String("sqlite-synchronous", "normal", "sqlite: normal or full")
	postgresqlURL := fs.String("postgresql-url", "", "postgresql: connection URL of an existing database, e.g. postgres://postgres@127.0.0.1:5432/ferretdb (required)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	// scripts/services recognises its own server by a path of its data folder on the command
	// line; with the PostgreSQL backend the pid file's path is that path.
	pidFile := fs.String("pid-file", "", "write the process id here while running")
	_ = fs.Parse(args)
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	config := &ferretdb.Config{
		Listener: ferretdb.ListenerConfig{TCP: *listenAddr},
		Logger:   logger,
	}
	// What the start line logs about the storage (no password).
	var storage []any

	switch *backend {
	case "sqlite":
		if *postgresqlURL != "" {
			return errors.New("--postgresql-url needs --backend postgresql")
		}
		if *synchronous != "normal" && *synchronous != "full" {
			return fmt.Errorf("--sqlite-synchronous: want normal or full, got %q", *synchronous)
		}
		if *sqliteDir == "" {
			return errors.New("--sqlite-dir is required with --backend sqlite")
		}
		dir, err := filepath.Abs(*sqliteDir)
		if err != nil {
			return fmt.Errorf("--sqlite-dir: %w", err)
		}
		if err = os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("--sqlite-dir: %w", err)
		}
		// FerretDB wants an SQLite URI naming a directory: "file:" + path ending in "/"; pragmas
		// it does not set itself (it adds WAL, a busy timeout and auto_vacuum) pass through.
		config.Handler = "sqlite"
		config.SQLiteURL = "file:" + strings.TrimSuffix(dir, "/") + "/?_pragma=synchronous(" + *synchronous + ")"
		storage = []any{"sqlite_url", config.SQLiteURL}

	case "postgresql":
		if *sqliteDir != "" {
			return errors.New("--sqlite-dir needs --backend sqlite")
		}
		if *postgresqlURL == "" {
			return errors.New("--postgresql-url is required with --backend postgresql")
		}
		u, err := url.Parse(*postgresqlURL)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || strings.Trim(u.Path, "/") == "" {
			return fmt.Errorf("--postgresql-url: want postgres://[user@]host:port/database[?params], got %q", redactURL(*postgresqlURL))
		}
		config.Handler = "postgresql"
		config.PostgreSQLURL = *postgresqlURL
		storage = []any{"postgresql_url", redactURL(*postgresqlURL)}

	default:
		return fmt.Errorf("--backend: want sqlite or postgresql, got %q", *backend)
	}

	f, err := ferretdb.New(config)
	if err != nil {
		return err
	}

	if *pidFile != "" {
		if err = writePidFile(*pidFile); err != nil {
			return fmt.Errorf("--pid-file: %w", err)
		}
		defer removePidFile(*pidFile)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	// Warn level so that it shows with the default --log-level of scripts/services.
	logger.Warn("ferretdb-shim started", append([]any{
		"ferretdb", ferretdbVersion(), "listen_addr", *listenAddr, "backend", *backend,
	}, storage...)...)
	err = f.Run(ctx)
	logger.Warn("ferretdb-shim stopped")

	return err
}

// writePidFile writes this process's id to path atomically (a reader never sees a partial file).
func writePidFile(path string) error {
	tmp := fmt.Sprintf("%s.tmp.%d", path, os.Getpid())
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644); err != nil {
		return err
	}

	return os.Rename(tmp, path)
}

// removePidFile removes path if it still names this process.
func removePidFile(path string) {
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == fmt.Sprint(os.Getpid()) {
		_ = os.Remove(path)
	}
}

// redactURL hides the password of a connection URL for logs and errors.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}

	return u.Redacted()
}

// ferretdbVersion reports the FerretDB module version compiled in: the
// embedded package itself says "unknown" (it has no generated version file).
func ferretdbVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range bi.Deps {
			if dep.Path == "github.com/FerretDB/FerretDB" {
				return dep.Version
			}
		}
	}

	return "unknown"
}

// ping performs a real MongoDB wire round trip (the `ping` command, then
// `buildInfo` for the version) so readiness means "answers queries", not
// merely "port is open".
func ping(args []string) error {
	fs := flag.NewFlagSet("ping", flag.ExitOnError)
	uri := fs.String("uri", "mongodb://127.0.0.1:27017", "MongoDB connection string")
	timeout := fs.Duration("timeout", 2*time.Second, "overall deadline")
	quiet := fs.Bool("quiet", false, "print nothing on success")
	_ = fs.Parse(args)

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	opts := options.Client().ApplyURI(*uri).
		SetServerSelectionTimeout(*timeout).
		SetConnectTimeout(*timeout)

	client, err := mongo.Connect(ctx, opts)
	if err != nil {
		return err
	}
	// No client.Disconnect: it sends endSessions, which FerretDB does not
	// implement and logs as a WARN with a full message dump on every check.
	// The process exits right after, which closes the connection anyway.

	admin := client.Database("admin")
	if err = admin.RunCommand(ctx, bson.D{{Key: "ping", Value: 1}}).Err(); err != nil {
		return err
	}

	var info struct {
		Version         string `bson:"version"`
		FerretDBVersion string `bson:"ferretdbVersion"`
	}
	if err = admin.RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Decode(&info); err != nil {
		return err
	}

	if !*quiet {
		if info.FerretDBVersion != "" {
			// FerretDB answers buildInfo as MongoDB <version>; its own
			// version is "unknown" when embedded (see ferretdbVersion).
			fmt.Printf("ok: MongoDB %s (FerretDB)\n", info.Version)
		} else {
			fmt.Printf("ok: %s\n", info.Version)
		}
	}

	return nil
}
