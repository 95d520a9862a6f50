package proxy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
)

// Exit statuses of the command.
const (
	ExitOK        = 0
	ExitFailure   = 1 // check: a key is unusable; serve, report: a run-time failure
	ExitBadConfig = 2 // usage or configuration errors
)

const usage = `apipool: a key-pooling proxy for HTTP APIs

usage:
  apipool serve  -config apipool.yaml    run the proxy (SIGHUP reloads keys and tokens, SIGTERM stops)
  apipool check  -config apipool.yaml    probe every key; exit status 1 when one is unusable
  apipool report -config apipool.yaml [-since 24h|7d] [-format table|csv|json]
                                         attempts per key from the configured store (sql or clickhouse)
  apipool validate -config apipool.yaml  check the config file and the keys it names
  apipool hash-token                     read a token (or password) on stdin, print its SHA-256
  apipool version                        the module version, the Go version and the commit built
`

// Main runs the command with args (without the program name) and returns
// its exit status.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return ExitBadConfig
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("apipool "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "apipool.yaml", "the configuration file")
	var since *string
	var format *string
	switch cmd {
	case "report":
		since = fs.String("since", "24h", "the window to report, back from now: a duration (90m, 24h) or days (1d, 7d)")
		format = fs.String("format", "table", "table, csv or json")
	case "serve", "check", "validate":
	case "hash-token":
		return hashToken(stdin, stdout, stderr)
	case "version", "-version", "--version":
		bi, ok := debug.ReadBuildInfo()
		if !ok {
			bi = nil
		}
		fmt.Fprint(stdout, Version(bi))
		return ExitOK
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return ExitOK
	default:
		fmt.Fprintf(stderr, "apipool: unknown command %q\n\n%s", cmd, usage)
		return ExitBadConfig
	}
	if err := fs.Parse(args); err != nil {
		return ExitBadConfig
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "apipool %s: unexpected arguments %q\n", cmd, fs.Args())
		return ExitBadConfig
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "apipool: configuration errors:\n%v\n", err)
		return ExitBadConfig
	}
	switch cmd {
	case "validate":
		n := 0
		for _, u := range cfg.Upstreams {
			n += len(u.Keys)
		}
		fmt.Fprintf(stdout, "%s: ok (%d upstreams, %d keys, %d tokens)\n", *cfgPath, len(cfg.Upstreams), n, len(cfg.Tokens))
		return ExitOK
	case "check":
		res, err := Check(ctx, cfg, nil)
		if err != nil {
			fmt.Fprintf(stderr, "apipool check: %v\n", err)
			return ExitFailure
		}
		bad, skipped := PrintCheck(stdout, res)
		if skipped == len(res) {
			fmt.Fprintln(stderr, "apipool check: no upstream has a probe (upstreams[].probe)")
			return ExitBadConfig
		}
		if bad > 0 {
			fmt.Fprintf(stderr, "apipool check: %d of %d keys unusable\n", bad, len(res)-skipped)
			return ExitFailure
		}
		return ExitOK
	case "report":
		window, err := ParseSince(*since)
		if err != nil {
			fmt.Fprintf(stderr, "apipool report: %v\n", err)
			return ExitBadConfig
		}
		switch *format {
		case "table", "csv", "json":
		default:
			fmt.Fprintf(stderr, "apipool report: -format: want table, csv or json, got %q\n", *format)
			return ExitBadConfig
		}
		st, closeFn, err := OpenStats(ctx, cfg.Recorder)
		if err != nil {
			fmt.Fprintf(stderr, "apipool report: %v\n", err)
			if errors.Is(err, ErrNoStore) {
				return ExitBadConfig
			}
			return ExitFailure
		}
		defer closeFn(context.Background())
		rep, err := BuildReport(ctx, st, window, time.Now())
		if err != nil {
			fmt.Fprintf(stderr, "apipool report: %v\n", err)
			return ExitFailure
		}
		if err := rep.Write(stdout, *format); err != nil {
			fmt.Fprintf(stderr, "apipool report: %v\n", err)
			return ExitFailure
		}
		return ExitOK
	}
	return serve(ctx, cfg, stderr)
}

// NewLogger returns the logger the config asks for, writing to w.
func NewLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	o := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}

// serve runs the proxy until SIGTERM or SIGINT (or ctx ends).
func serve(ctx context.Context, cfg *config.Config, stderr io.Writer) int {
	log := NewLogger(cfg, stderr)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		log.Error("cannot listen", "addr", cfg.Listen, "error", err)
		return ExitFailure
	}
	var adminLn net.Listener
	if cfg.AdminListen != "" {
		if adminLn, err = net.Listen("tcp", cfg.AdminListen); err != nil {
			ln.Close()
			log.Error("cannot listen", "addr", cfg.AdminListen, "error", err)
			return ExitFailure
		}
	}
	s, err := New(ctx, cfg, Options{Logger: log, Dashboard: DashboardHandler(cfg.Dashboard.Actions)})
	if err != nil {
		ln.Close()
		if adminLn != nil {
			adminLn.Close()
		}
		log.Error("cannot start", "error", err)
		return ExitFailure
	}
	return Run(ctx, s, ln, adminLn)
}

// Run serves s on its listeners, reloads on SIGHUP and on file changes,
// and shuts down gracefully on SIGTERM or SIGINT or when ctx ends.
func Run(ctx context.Context, s *Server, ln, adminLn net.Listener) int {
	cfg := s.cfg.Load()
	stop := make(chan os.Signal, 1)
	hup := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(stop)
	defer signal.Stop(hup)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go s.Watch(wctx, cfg.ReloadInterval)
	go func() {
		for {
			select {
			case <-wctx.Done():
				return
			case <-hup:
				s.log.Info("SIGHUP: reloading")
				s.Reload()
			}
		}
	}()
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln, adminLn) }()
	addr := []any{"addr", ln.Addr().String(), "tls", cfg.TLS != nil}
	if adminLn != nil {
		addr = append(addr, "admin", adminLn.Addr().String(), "admin_tls", cfg.AdminTLS != nil)
	}
	s.log.Info("serving", append(addr, "upstreams", len(s.upstreams))...)
	select {
	case err := <-done:
		if err != nil {
			s.log.Error("serve failed", "error", err)
			return ExitFailure
		}
		return ExitOK
	case sig := <-stop:
		s.log.Info("stopping", "signal", sig.String())
	case <-ctx.Done():
		s.log.Info("stopping", "reason", ctx.Err())
	}
	sctx, scancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout)
	defer scancel()
	err := s.Shutdown(sctx)
	<-done
	if err != nil {
		s.log.Error("shutdown", "error", err)
		return ExitFailure
	}
	return ExitOK
}

func hashToken(stdin io.Reader, stdout, stderr io.Writer) int {
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && err != io.EOF {
		fmt.Fprintln(stderr, "apipool hash-token:", err)
		return ExitFailure
	}
	tok := strings.TrimRight(line, "\r\n")
	if tok == "" {
		fmt.Fprintln(stderr, "apipool hash-token: give the token on stdin, e.g. head -c 24 /dev/urandom | base64 | tee token | apipool hash-token")
		return ExitBadConfig
	}
	sum := sha256.Sum256([]byte(tok))
	fmt.Fprintln(stdout, hex.EncodeToString(sum[:]))
	return ExitOK
}

// Version describes the build for apipool version: the module's version
// ("(devel)" when built inside its own module without version control
// information), the Go version, and the commit (vcs.revision, "+dirty"
// when vcs.modified) and its time when the build recorded them. bi may be
// nil (no build information).
func Version(bi *debug.BuildInfo) string {
	var b strings.Builder
	v, goV := "unknown", runtime.Version()
	if bi != nil {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		if bi.GoVersion != "" {
			goV = bi.GoVersion
		}
	}
	fmt.Fprintf(&b, "apipool %s\ngo %s\n", v, goV)
	if bi == nil {
		return b.String()
	}
	var rev, when string
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" {
		if dirty {
			rev += "+dirty"
		}
		fmt.Fprintf(&b, "revision %s", rev)
		if when != "" {
			fmt.Fprintf(&b, " (%s)", when)
		}
		b.WriteString("\n")
	}
	return b.String()
}
