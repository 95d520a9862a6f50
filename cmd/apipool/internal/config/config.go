package config

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/recorder/memory"
	"github.com/apipool-ng/apipool/status"
)

// Defaults of the settings the file leaves out.
const (
	DefaultListen            = "127.0.0.1:8080"
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 60 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	DefaultShutdownTimeout   = 30 * time.Second
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultMaxBody           = 32 << 20
	DefaultTimeout           = 10 * time.Minute
	DefaultReloadInterval    = 10 * time.Second
	DefaultDashboardPath     = "/dashboard/"
	MinTokenLength           = 16
)

// Config is a validated configuration. Load returns it; nothing in it is
// changed afterwards.
type Config struct {
	Path           string
	Listen         string
	AdminListen    string // empty: admin endpoints on Listen
	TLS            *TLS   // the listener's; nil: plain HTTP
	AdminTLS       *TLS   // the admin listener's; nil: plain HTTP
	LogFormat      string // "json" or "text"
	LogLevel       slog.Level
	Server         Server
	FingerprintKey []byte // nil: the library's default
	Tokens         []Token
	Upstreams      []Upstream
	Recorder       Recorder
	Redis          *Redis
	Dashboard      Dashboard
	AdminUsers     []User // the admin API's users; none: no admin API
	Telemetry      Telemetry
	ReloadInterval time.Duration // 0: reload on SIGHUP only
	Alerts         Alerts        // alerts.go
}

// TLS is a listener's TLS settings. The certificate and key are read
// again when their files change (the proxy checks at each handshake).
type TLS struct {
	CertFile, KeyFile string // resolved paths
	ClientCAFile      string // "": no client certificate asked for
	ClientCAs         *x509.CertPool
	MinVersion        uint16 // tls.VersionTLS12 or tls.VersionTLS13
}

// Server holds the listener's timeouts and bounds.
type Server struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration // the request body's, from the request's start
	WriteTimeout      time.Duration // 0: each upstream's Timeout bounds writing
	IdleTimeout       time.Duration
	ShutdownTimeout   time.Duration
	MaxHeaderBytes    int
}

// Token is one client credential of the proxy, as the SHA-256 of its value.
type Token struct {
	Name      string
	Hash      [32]byte
	Rate      float64 // requests per second; 0: no limit
	Burst     int
	MaxBody   int64
	Upstreams map[string]bool // nil: every upstream
	Budgets   apipool.Budget  // the client's (budgets.go); zero: none
}

// Inject says how a key goes on the upstream request.
type Inject struct {
	Kind string // "bearer", "header" or "query"
	Name string // the header or parameter
}

// KeyLimits are every key's limits in one upstream.
type KeyLimits struct {
	PerSecond   float64
	PerMinute   int
	PerDay      int
	MaxInFlight int
}

// Probe is the request that check sends with each key.
type Probe struct {
	Method   string
	Path     string
	Interval time.Duration
}

// Upstream is one API behind the proxy.
type Upstream struct {
	Name                  string
	Prefix                string // "" or "/name", no trailing slash
	Host                  string // "" or a host name the caller uses
	Target                *url.URL
	Keys                  []apipool.Key
	KeyEnv, KeyFile       string
	Inject                Inject
	Strategy              apipool.Strategy
	MaxAttempts           int
	MaxWait               *time.Duration
	Cooldown, MaxCooldown time.Duration
	MaxBufferedBody       *int64
	RetryNonIdempotent    bool
	Timeout               time.Duration
	ResponseHeaderTimeout time.Duration
	KeyLimits             KeyLimits
	KeyBudgets            apipool.Budget // every key's (budgets.go); zero: none
	Classifier            status.Config
	Probe                 *Probe
	Routing               Routing // routing.go; each key's Tier and Models are in Keys
	Usage                 Usage   // usage.go
}

// Recorder says where usage events go.
type Recorder struct {
	Type       string // "memory", "clickhouse" or "sql"
	Retention  time.Duration
	ClickHouse ClickHouse
	SQL        SQL
}

// ClickHouse is the ClickHouse store's settings.
type ClickHouse struct {
	Addrs              []string
	Database, Table    string
	Username, Password string
	SpillDir           string
	BatchSize          int
	TTL                time.Duration
	Cluster            string // a cluster of the servers' remote_servers, or ""
	InsertDistributed  bool   // insert through the Distributed table
}

// SQL is the SQL store's settings.
type SQL struct {
	Driver, DSN, TablePrefix string
	Retention                time.Duration // of raw events; 0: kept
	// SQLiteFile is the SQLite database's file, resolved, as errors may
	// show it; "" for a database in memory, another driver, or a path
	// that is not to be shown (it came from a variable or looks like a
	// key).
	SQLiteFile string
}

// Redis is the shared key state's server.
type Redis struct {
	Addr, Username, Password string
	DB                       int
	Prefix                   string
}

// Dashboard is the dashboard's mount point and users.
type Dashboard struct {
	Enabled bool
	Path    string
	Actions bool // the disable, enable and probe buttons
	Users   []User
}

// User is a dashboard or admin API login, with the SHA-256 of its password.
type User struct {
	Name string
	Hash [32]byte
}

// Telemetry says where metrics and traces go.
type Telemetry struct {
	ServiceName string
	Prometheus  bool
	OTLP        *OTLP
}

// OTLP is the OTLP/HTTP exporter's settings.
type OTLP struct {
	Endpoint       string // base URL; empty: OTEL_EXPORTER_OTLP_* variables
	Traces         bool
	Metrics        bool
	MetricInterval time.Duration
}

// Load reads, expands and validates the file at path, and loads the keys
// it names. It returns Errors listing every problem it found.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, Errors{{File: path, Reason: "cannot read the file: " + errors.Unwrap(err).Error()}}
	}
	return Parse(path, b)
}

// Parse is Load for a file's contents; name is used in errors. Variables
// come from the process's environment.
func Parse(name string, data []byte) (*Config, error) {
	return parse(name, data, os.LookupEnv)
}

func parse(name string, data []byte, env func(string) (string, bool)) (*Config, error) {
	// The values read from the environment, to scrub from the errors
	// should one quote them.
	var values []string
	lookup := func(k string) (string, bool) {
		v, ok := env(k)
		if ok {
			values = append(values, v)
		}
		return v, ok
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil, Errors{{File: name, Reason: "the file is empty"}}
		}
		return nil, Errors{syntaxError(name, data, err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		return nil, Errors{{File: name, Line: extra.Line, Reason: "more than one YAML document; write one"}}
	}
	d := &decoder{file: name, lookup: lookup}
	var f fileT
	if len(doc.Content) == 1 {
		d.node(doc.Content[0], reflect.ValueOf(&f).Elem(), "")
	}
	v := &validator{file: name, dir: configDir(name), lookup: lookup}
	c := v.config(&f)
	if errs := merge(d.errs, v.errs, d.failed); len(errs) > 0 {
		if !noScrub {
			scrub(errs, values)
		}
		return nil, errs
	}
	c.Path = name
	return c, nil
}

// syntaxError turns the YAML parser's error ("yaml: line 3: ...") into an
// Error. The parser's messages are its own words, but for an anchor's
// name; that is left out. The parser names the line where the construct
// it was reading began: a tab in the indentation, or a ${VAR} in a flow
// mapping ({...}), are found and named here.
func syntaxError(name string, data []byte, err error) *Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	e := &Error{File: name, Reason: msg}
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if i := strings.IndexByte(rest, ':'); i > 0 {
			if n, err := strconv.Atoi(rest[:i]); err == nil {
				e.Line, e.Reason = n, strings.TrimSpace(rest[i+1:])
			}
		}
	}
	if strings.HasPrefix(e.Reason, "unknown anchor") {
		e.Reason = "an alias (*name) refers to no anchor (&name) defined before it"
	}
	if i := strings.IndexByte(e.Reason, '`'); i >= 0 {
		// A decoder's quote of a value: not expected from the parser.
		e.Reason = strings.TrimSpace(e.Reason[:i]) + " (the rest of the parser's message is not shown)"
	}
	lines := strings.Split(string(data), "\n")
	for i, l := range lines {
		indent := l[:len(l)-len(strings.TrimLeft(l, " \t"))]
		if strings.Contains(indent, "\t") && strings.TrimSpace(l) != "" {
			e.Line = i + 1
			e.Reason = "a tab in the indentation: YAML indents with spaces (" + e.Reason + ")"
			return e
		}
	}
	from := max(e.Line-1, 0)
	for i := from; i < len(lines) && i < from+3; i++ {
		if unquotedVarInFlow(lines[i]) {
			e.Line = i + 1
			e.Reason += ": a ${VAR} inside {...} or [...] must be quoted, as in {target: '${UPSTREAM_URL}'}"
			break
		}
	}
	return e
}

// unquotedVarInFlow reports whether line has a "${" outside quotes after
// a '{' or '[' (where YAML reads the braces as its own).
func unquotedVarInFlow(line string) bool {
	var quote byte
	flow := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '#' && (i == 0 || line[i-1] == ' '):
			return false
		case c == '{' || c == '[':
			if i > 0 && line[i-1] == '$' {
				if flow {
					return true
				}
				continue
			}
			flow = true
		}
	}
	return false
}

type validator struct {
	file   string
	dir    string // the config file's directory: relative paths start there
	lookup func(string) (string, bool)
	errs   Errors
}

func (v *validator) fail(line int, field, format string, args ...any) {
	v.errs = append(v.errs, &Error{File: v.file, Line: line, Field: field, Reason: fmt.Sprintf(format, args...)})
}

func durOr[T ~int64](x Value[T], def time.Duration) time.Duration {
	if x.Set {
		return time.Duration(x.V)
	}
	return def
}

func (v *validator) config(f *fileT) *Config {
	c := &Config{
		Listen:      f.Listen.V,
		AdminListen: f.Admin.Listen.V,
		LogFormat:   "text",
		Server: Server{
			ReadHeaderTimeout: durOr(f.Server.ReadHeaderTimeout, DefaultReadHeaderTimeout),
			ReadTimeout:       durOr(f.Server.ReadTimeout, DefaultReadTimeout),
			WriteTimeout:      durOr(f.Server.WriteTimeout, 0),
			IdleTimeout:       durOr(f.Server.IdleTimeout, DefaultIdleTimeout),
			ShutdownTimeout:   durOr(f.Server.ShutdownTimeout, DefaultShutdownTimeout),
			MaxHeaderBytes:    DefaultMaxHeaderBytes,
		},
		ReloadInterval: durOr(f.Reload.Interval, DefaultReloadInterval),
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	v.addr(f.Listen, "listen")
	v.addr(f.Admin.Listen, "admin.listen")
	if f.TLS != nil {
		c.TLS = v.tls(f.TLS, "tls")
	}
	if f.Admin.TLS != nil {
		if !f.Admin.Listen.Set {
			v.fail(f.Admin.TLS.Line, "admin.tls", "needs admin.listen: without it the admin endpoints are served on listen, with tls")
		}
		c.AdminTLS = v.tls(f.Admin.TLS, "admin.tls")
	}
	if f.Server.MaxHeaderBytes.Set {
		if f.Server.MaxHeaderBytes.V < 1024 || f.Server.MaxHeaderBytes.V > 16<<20 {
			v.fail(f.Server.MaxHeaderBytes.Line, "server.max_header_bytes", "want 1KiB to 16MiB")
		}
		c.Server.MaxHeaderBytes = int(f.Server.MaxHeaderBytes.V)
	}
	if f.Server.ReadHeaderTimeout.Set && f.Server.ReadHeaderTimeout.V == 0 {
		v.fail(f.Server.ReadHeaderTimeout.Line, "server.read_header_timeout", "0 would let a client hold a connection open forever (slowloris); give a duration")
	}
	if f.Server.ReadTimeout.Set && f.Server.ReadTimeout.V == 0 {
		v.fail(f.Server.ReadTimeout.Line, "server.read_timeout", "0 would let a client send its body forever; give a duration")
	}
	if f.Server.IdleTimeout.Set && f.Server.IdleTimeout.V == 0 {
		v.fail(f.Server.IdleTimeout.Line, "server.idle_timeout", "0 would keep idle connections forever; give a duration")
	}
	switch f.Log.Format.V {
	case "", "text":
	case "json":
		c.LogFormat = "json"
	default:
		v.fail(f.Log.Format.Line, "log.format", "want text or json, got %s", shown(f.Log.Format))
	}
	if f.Log.Level.Set {
		if err := c.LogLevel.UnmarshalText([]byte(f.Log.Level.V)); err != nil {
			v.fail(f.Log.Level.Line, "log.level", "want debug, info, warn or error, got %s", shown(f.Log.Level))
		}
	}
	if f.FingerprintKey.Set {
		if !wholeVarLine(f.FingerprintKey) {
			v.fail(f.FingerprintKey.Line, "fingerprint_key", "is a secret: write it as ${VAR}, not in the file")
		} else if f.FingerprintKey.V == "" {
			v.fail(f.FingerprintKey.Line, "fingerprint_key", "is empty")
		}
		c.FingerprintKey = []byte(f.FingerprintKey.V)
	}

	maxBody := int64(DefaultMaxBody)
	if f.Defaults.MaxBody.Set {
		maxBody = int64(f.Defaults.MaxBody.V)
	}
	v.nonNeg(f.Defaults.Rate, "limits.rate")
	v.nonNeg(f.Defaults.Burst, "limits.burst")

	names := map[string]bool{}
	routes := map[string]int{}
	for i := range f.Upstreams {
		u := v.upstream(&f.Upstreams[i], fmt.Sprintf("upstreams[%d]", i), c.Server)
		if u == nil {
			continue
		}
		if names[u.Name] {
			v.fail(f.Upstreams[i].Name.Line, fmt.Sprintf("upstreams[%d].name", i), "%s names another upstream too", shown(f.Upstreams[i].Name))
		}
		names[u.Name] = true
		route := u.Host + " " + u.Prefix
		if j, dup := routes[route]; dup {
			v.fail(f.Upstreams[i].Prefix.Line, fmt.Sprintf("upstreams[%d]", i), "same host and prefix as upstreams[%d]", j)
		}
		routes[route] = i
		c.Upstreams = append(c.Upstreams, *u)
	}
	if len(f.Upstreams) == 0 {
		v.fail(0, "upstreams", "no upstream configured")
	}

	tokenNames := map[string]bool{}
	hashes := map[[32]byte]int{}
	for i := range f.Tokens {
		t := v.token(&f.Tokens[i], fmt.Sprintf("tokens[%d]", i), f.Defaults, maxBody, names)
		if t == nil {
			continue
		}
		if tokenNames[t.Name] {
			v.fail(f.Tokens[i].Name.Line, fmt.Sprintf("tokens[%d].name", i), "%s names another token too", shown(f.Tokens[i].Name))
		}
		tokenNames[t.Name] = true
		if j, dup := hashes[t.Hash]; dup && t.Hash != ([32]byte{}) {
			v.fail(f.Tokens[i].Name.Line, fmt.Sprintf("tokens[%d]", i), "same token as tokens[%d]", j)
		}
		hashes[t.Hash] = i
		c.Tokens = append(c.Tokens, *t)
	}
	if len(f.Tokens) == 0 {
		v.fail(0, "tokens", "no client token configured: the proxy lets in only callers with a token (see apipool hash-token)")
	}

	c.Recorder = v.recorder(&f.Recorder)
	if f.Redis != nil {
		c.Redis = v.redis(f.Redis)
	}
	c.Dashboard = v.dashboard(&f.Dashboard)
	c.AdminUsers = v.users(f.Admin.Users, "admin.users")
	c.Telemetry = v.telemetry(&f.Telemetry)
	c.Alerts = v.alerts(&f.Alerts)
	return c
}

func wholeVarLine(x Value[string]) bool { return x.Set && x.raw() }

func (v *validator) addr(x Value[string], field string) {
	if !x.Set {
		return
	}
	_, port, err := net.SplitHostPort(x.V)
	switch {
	case err != nil:
		v.fail(x.Line, field, "want host:port, got %s", shown(x))
	case strings.ContainsAny(x.V, "@/"):
		v.fail(x.Line, field, "want host:port, without a user, a password or a path, got %s", shown(x))
	default:
		// A port net.Listen or net.Dial would refuse (notaport, 99999)
		// is the file's error, with its line, not a failure at start.
		if _, err := net.LookupPort("tcp", port); err != nil {
			v.fail(x.Line, field, "want host:port with a port from 0 to 65535 (or a service name), got %s", shown(x))
		}
	}
}

func (v *validator) nonNeg(x any, field string) {
	switch x := x.(type) {
	case Value[int]:
		if x.V < 0 {
			v.fail(x.Line, field, "must not be negative")
		}
	case Value[float64]:
		if x.V < 0 {
			v.fail(x.Line, field, "must not be negative")
		}
	}
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '-' || c == '_' || c == '.' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func (v *validator) token(t *tokenT, at string, def limitsDefaultsT, maxBody int64, upstreams map[string]bool) *Token {
	out := &Token{Name: t.Name.V, Rate: def.Rate.V, Burst: def.Burst.V, MaxBody: maxBody}
	if !validName(out.Name) {
		v.fail(t.Name.Line, at+".name", "want a name of letters, digits, '-', '_' or '.', got %s", shown(t.Name))
	}
	switch {
	case t.SHA256.Set && t.Env.Set:
		v.fail(t.Env.Line, at, "give sha256 or env, not both")
	case t.SHA256.Set:
		b, err := hex.DecodeString(t.SHA256.V)
		if err != nil || len(b) != 32 {
			v.fail(t.SHA256.Line, at+".sha256", "want 64 hex digits (apipool hash-token prints them)")
		}
		copy(out.Hash[:], b)
	case t.Env.Set:
		name := v.envName(t.Env, at+".env", "the token", "WEB_TOKEN")
		if name == "" {
			break
		}
		val, ok := v.lookup(name)
		switch {
		case !ok:
			v.fail(t.Env.Line, at+".env", "%s is not set", varRef(name))
		case len(val) < MinTokenLength:
			v.fail(t.Env.Line, at+".env", "the token in %s is shorter than %d characters", shownName(name), MinTokenLength)
		}
		out.Hash = sha256.Sum256([]byte(val))
	default:
		v.fail(t.Name.Line, at, "give the token's sha256, or env naming the variable that holds it")
	}
	if t.Rate.Set {
		out.Rate = t.Rate.V
	}
	if t.Burst.Set {
		out.Burst = t.Burst.V
	}
	if t.MaxBody.Set {
		out.MaxBody = int64(t.MaxBody.V)
	}
	v.nonNeg(t.Rate, at+".rate")
	v.nonNeg(t.Burst, at+".burst")
	if out.Rate > 0 && out.Burst == 0 {
		out.Burst = max(1, int(out.Rate))
	}
	out.Budgets = v.budget(t.Budgets, at+".budgets")
	if len(t.Upstreams) > 0 {
		out.Upstreams = map[string]bool{}
		for j, u := range t.Upstreams {
			if !upstreams[u.V] {
				v.fail(u.Line, fmt.Sprintf("%s.upstreams[%d]", at, j), "no upstream is named %s%s", shown(u), didYouMean(u, slices.Sorted(maps.Keys(upstreams))))
			}
			out.Upstreams[u.V] = true
		}
	}
	return out
}

func (v *validator) upstream(u *upstreamT, at string, srv Server) *Upstream {
	out := &Upstream{
		Name:                  u.Name.V,
		Host:                  strings.ToLower(u.Host.V),
		MaxAttempts:           u.MaxAttempts.V,
		RetryNonIdempotent:    u.RetryNonIdempotent.V,
		Timeout:               durOr(u.Timeout, DefaultTimeout),
		ResponseHeaderTimeout: durOr(u.ResponseHeaderTimeout, 0),
		Cooldown:              durOr(u.Cooldown, apipool.DefaultCooldown),
		MaxCooldown:           durOr(u.MaxCooldown, apipool.DefaultMaxCooldown),
		KeyEnv:                u.Keys.Env.V,
		KeyFile:               u.Keys.File.V,
	}
	if !validName(out.Name) {
		v.fail(u.Name.Line, at+".name", "want a name of letters, digits, '-', '_' or '.', got %s", shown(u.Name))
	}
	if u.Prefix.Set {
		p := strings.TrimRight(u.Prefix.V, "/")
		if !strings.HasPrefix(u.Prefix.V, "/") || strings.ContainsAny(p, "?#%") || strings.Contains(p, "//") || strings.Contains(p+"/", "/../") || strings.Contains(p+"/", "/./") {
			v.fail(u.Prefix.Line, at+".prefix", "want a path such as /openai, got %s", shown(u.Prefix))
		}
		if reserved(p) {
			v.fail(u.Prefix.Line, at+".prefix", "%s is taken by the proxy's own endpoints (/healthz, /readyz, /metrics)", shown(u.Prefix))
		}
		out.Prefix = p
	}
	if u.Host.Set && (out.Host == "" || strings.ContainsAny(out.Host, "/ @?#")) {
		v.fail(u.Host.Line, at+".host", "want a host name, got %s", shown(u.Host))
	}
	if !u.Prefix.Set && !u.Host.Set {
		v.fail(u.Name.Line, at, "give a prefix (such as /openai) or a host the callers use, or both")
	}
	if !u.Target.Set {
		v.fail(u.Name.Line, at+".target", "missing: the upstream's base URL, such as https://api.openai.com")
	} else if t, problem := targetURL(u.Target.V); problem != "" {
		v.fail(u.Target.Line, at+".target", "want an http or https URL with a host and no user, query or fragment, such as https://api.openai.com: %s%s", problem, fromVars(u.Target))
	} else {
		t.Path = strings.TrimRight(t.Path, "/")
		t.RawPath = ""
		out.Target = t
	}
	switch s := u.Inject.V; {
	case s == "" || s == "bearer":
		out.Inject = Inject{Kind: "bearer"}
	case strings.HasPrefix(s, "header:") && validHeaderName(strings.TrimPrefix(s, "header:")):
		// A name the pool's WithHeader would refuse is the file's error,
		// with its line, not a failure at start.
		out.Inject = Inject{Kind: "header", Name: http.CanonicalHeaderKey(strings.TrimPrefix(s, "header:"))}
	case strings.HasPrefix(s, "query:") && len(s) > len("query:"):
		out.Inject = Inject{Kind: "query", Name: strings.TrimPrefix(s, "query:")}
	default:
		v.fail(u.Inject.Line, at+".inject", "want bearer, header:NAME or query:NAME, got %s", shown(u.Inject))
	}
	if u.Strategy.Set {
		s, err := apipool.ParseStrategy(u.Strategy.V)
		if err != nil {
			v.fail(u.Strategy.Line, at+".strategy", "want %s, got %s%s", strings.Join(StrategyNames, ", "), shown(u.Strategy), didYouMean(u.Strategy, StrategyNames))
		}
		out.Strategy = s
	}
	if u.MaxAttempts.Set && (u.MaxAttempts.V < 1 || u.MaxAttempts.V > 100) {
		v.fail(u.MaxAttempts.Line, at+".max_attempts", "want 1 to 100")
	}
	if u.MaxWait.Set {
		d := time.Duration(u.MaxWait.V)
		out.MaxWait = &d
	}
	if u.MaxBufferedBody.Set {
		n := int64(u.MaxBufferedBody.V)
		out.MaxBufferedBody = &n
	}
	if out.Cooldown == 0 || out.Cooldown > out.MaxCooldown {
		line := u.Cooldown.Line
		if !u.Cooldown.Set { // a max_cooldown below the default cooldown
			line = u.MaxCooldown.Line
		}
		v.fail(line, at+".cooldown", "want 0 < cooldown <= max_cooldown")
	}
	if out.Timeout == 0 {
		v.fail(u.Timeout.Line, at+".timeout", "0 would let a request run forever; give a duration")
	}
	kl := u.KeyLimits
	v.nonNeg(kl.PerSecond, at+".key_limits.per_second")
	v.nonNeg(kl.PerMinute, at+".key_limits.per_minute")
	v.nonNeg(kl.PerDay, at+".key_limits.per_day")
	v.nonNeg(kl.MaxInFlight, at+".key_limits.max_in_flight")
	// The pool's own bounds (apipool.Key): past them New refuses every
	// key, at start, without the file's line.
	if x := kl.PerSecond; x.V > 1e6 || math.IsNaN(x.V) || math.IsInf(x.V, 0) {
		v.fail(x.Line, at+".key_limits.per_second", "want 0 to 1000000")
	}
	if x := kl.PerMinute; x.V > 10_000_000 {
		v.fail(x.Line, at+".key_limits.per_minute", "want 0 to 10000000")
	}
	if x := kl.PerDay; x.V > math.MaxInt32 {
		v.fail(x.Line, at+".key_limits.per_day", "want 0 to %d", math.MaxInt32)
	}
	out.KeyLimits = KeyLimits{kl.PerSecond.V, kl.PerMinute.V, kl.PerDay.V, kl.MaxInFlight.V}
	out.KeyBudgets = v.budget(u.KeyBudgets, at+".key_budgets")
	for j, c := range u.Classifier.RateLimitCodes {
		out.Classifier.RateLimitCodes = append(out.Classifier.RateLimitCodes, v.code(c, fmt.Sprintf("%s.classifier.rate_limit_codes[%d]", at, j)))
	}
	for j, c := range u.Classifier.InvalidKeyCodes {
		out.Classifier.InvalidKeyCodes = append(out.Classifier.InvalidKeyCodes, v.code(c, fmt.Sprintf("%s.classifier.invalid_key_codes[%d]", at, j)))
	}
	if p := u.Probe; p != nil {
		out.Probe = &Probe{Method: strings.ToUpper(p.Method.V), Path: p.Path.V, Interval: time.Duration(p.Interval.V)}
		if out.Probe.Method == "" {
			out.Probe.Method = http.MethodGet
		}
		if !validName(out.Probe.Method) {
			v.fail(p.Method.Line, at+".probe.method", "want an HTTP method such as GET, got %s", shown(p.Method))
		}
		if !p.Path.Set {
			v.fail(p.Line, at+".probe.path", "missing: the path that check requests with each key, such as /v1/models")
		} else if !strings.HasPrefix(out.Probe.Path, "/") {
			v.fail(p.Path.Line, at+".probe.path", "want a path such as /v1/models, got %s", shown(p.Path))
		}
	}
	envOK := true
	if u.Keys.Env.Set {
		out.KeyEnv = v.envName(u.Keys.Env, at+".keys.env", "the keys", "OPENAI_KEYS")
		envOK = out.KeyEnv != ""
	}
	out.KeyFile = v.resolve(out.KeyFile)
	keys, errs, opts := loadKeys(out.Name, out.KeyEnv, u.Keys.File, out.KeyFile, v.lookup, out.KeyLimits)
	for _, e := range errs {
		if !envOK && !e.file {
			continue // "no keys": keys.env's error says why
		}
		line := u.Keys.Env.Line
		field := at + ".keys.env"
		if e.file {
			line, field = u.Keys.File.Line, at+".keys.file"
		}
		if !u.Keys.Env.Set && !u.Keys.File.Set {
			line, field = u.Name.Line, at+".keys"
		}
		v.fail(line, field, "%s", e.msg)
	}
	withBudget(keys, out.KeyBudgets)
	out.Keys = keys
	v.routing(u, at, out, opts)               // routing.go
	out.Usage = v.usage(u.Usage, at+".usage") // usage.go
	if b := out.KeyBudgets; (b.TokensPerMinute > 0 || b.TokensPerDay > 0) && (out.Usage.Reader == "" || out.Usage.Reader == "header") {
		v.fail(u.KeyBudgets.Line, at+".key_budgets", "a token budget counts the tokens the answers state: it needs usage.reader (openai, anthropic, gemini or auto)")
	}
	if b := out.KeyBudgets; (b.CostPerDay > 0 || b.CostPerMonth > 0) && out.Usage.Prices == nil {
		v.fail(u.KeyBudgets.Line, at+".key_budgets", "a cost budget counts the cost of the answers: it needs usage.prices or usage.prices_file")
	} else if _, any := out.Usage.Prices.Lookup(""); (b.CostPerDay > 0 || b.CostPerMonth > 0) && out.Routing.Model == "" && !any {
		v.fail(u.KeyBudgets.Line, at+".key_budgets", `a cost budget prices each answer by its model: it needs routing.model (json, path or github), or a "*" price for every model`)
	}
	return out
}

func (v *validator) code(c Value[int], field string) int {
	if c.V < 100 || c.V > 599 {
		if c.fromVars() {
			v.fail(c.Line, field, "want an HTTP status code (100-599)%s", fromVars(c))
		} else {
			v.fail(c.Line, field, "%d is not an HTTP status code (100-599)", c.V)
		}
	}
	return c.V
}

// reserved reports whether a path prefix would hide the proxy's endpoints.
func reserved(p string) bool {
	for _, r := range []string{"/healthz", "/readyz", "/metrics"} {
		if p == "" || p == r || strings.HasPrefix(r, p+"/") {
			return true
		}
	}
	return false
}

func (v *validator) secret(x Value[string], field string) string {
	if x.Set && !x.raw() {
		v.fail(x.Line, field, "is a secret: write it as ${VAR}, not in the file")
	}
	return x.V
}

func (v *validator) recorder(r *recorderT) Recorder {
	out := Recorder{Type: r.Type.V, Retention: time.Duration(r.Memory.Retention.V)}
	if out.Type == "" {
		out.Type = "memory"
	}
	if x := r.Memory.Retention; x.Set {
		if d := time.Duration(x.V); d < memory.MinRetention || d > memory.MaxRetention {
			v.fail(x.Line, "recorder.memory.retention", "want %dm to %dh (%d days)%s", memory.MinRetention/time.Minute, memory.MaxRetention/time.Hour, memory.MaxRetention/(24*time.Hour), fromVars(x))
		}
	}
	switch out.Type {
	case "memory":
	case "clickhouse":
		ch := r.ClickHouse
		if ch == nil {
			v.fail(r.Type.Line, "recorder.clickhouse", "missing: the ClickHouse server's settings")
			return out
		}
		for _, a := range ch.Addrs {
			out.ClickHouse.Addrs = append(out.ClickHouse.Addrs, a.V)
			v.addr(a, "recorder.clickhouse.addrs")
		}
		out.ClickHouse.Database, out.ClickHouse.Table = ch.Database.V, ch.Table.V
		out.ClickHouse.Username = ch.Username.V
		out.ClickHouse.Password = v.secret(ch.Password, "recorder.clickhouse.password")
		out.ClickHouse.SpillDir, out.ClickHouse.BatchSize = v.resolve(ch.SpillDir.V), ch.BatchSize.V
		out.ClickHouse.TTL = time.Duration(ch.TTL.V)
		out.ClickHouse.Cluster, out.ClickHouse.InsertDistributed = ch.Cluster.V, ch.InsertDistributed.V
		v.nonNeg(ch.BatchSize, "recorder.clickhouse.batch_size")
	case "sql":
		s := r.SQL
		if s == nil {
			v.fail(r.Type.Line, "recorder.sql", "missing: driver and dsn")
			return out
		}
		switch s.Driver.V {
		case "sqlite", "postgres", "postgresql", "pgx", "mysql", "mariadb":
		default:
			v.fail(s.Driver.Line, "recorder.sql.driver", "want sqlite, postgres or mysql, got %s", shown(s.Driver))
		}
		if s.DSN.V == "" {
			v.fail(s.DSN.Line, "recorder.sql.dsn", "missing")
		}
		if s.Driver.V != "sqlite" && !s.DSN.raw() {
			v.fail(s.DSN.Line, "recorder.sql.dsn", "holds a password: write it as ${VAR}, not in the file")
		}
		out.SQL = SQL{Driver: s.Driver.V, DSN: s.DSN.V, TablePrefix: s.TablePrefix.V, Retention: time.Duration(s.Retention.V)}
		if s.Driver.V == "sqlite" && s.DSN.V != "" {
			var file string
			out.SQL.DSN, file = v.sqliteDSN(s.DSN.V)
			if file != "" {
				label := pathLabel(s.DSN, file)
				if pathShown(s.DSN) {
					out.SQL.SQLiteFile = file
				}
				if st, err := os.Stat(filepath.Dir(file)); err != nil || !st.IsDir() {
					v.fail(s.DSN.Line, "recorder.sql.dsn", "the SQLite database %s: its directory does not exist (a relative path starts at the config file's directory)", label)
				}
			}
		}
	default:
		v.fail(r.Type.Line, "recorder.type", "want memory, clickhouse or sql, got %s", shown(r.Type))
		return out
	}
	// The settings of another type than the one in use would be ignored:
	// a forgotten `type: clickhouse` would run on memory, unnoticed.
	other := func(line int, section string) {
		if line == 0 { // an empty section: {}
			line = r.Type.Line
		}
		v.fail(line, "recorder."+section, "set, but recorder.type is %s, which does not read it: set type: %s, or remove it", out.Type, section)
	}
	if ch := r.ClickHouse; ch != nil && out.Type != "clickhouse" {
		v.secret(ch.Password, "recorder.clickhouse.password")
		lines := []int{ch.Database.Line, ch.Table.Line, ch.Username.Line, ch.Password.Line, ch.SpillDir.Line, ch.BatchSize.Line, ch.TTL.Line, ch.Cluster.Line, ch.InsertDistributed.Line}
		for _, a := range ch.Addrs {
			lines = append(lines, a.Line)
		}
		other(firstLine(lines...), "clickhouse")
	}
	if s := r.SQL; s != nil && out.Type != "sql" {
		other(firstLine(s.Driver.Line, s.DSN.Line, s.TablePrefix.Line, s.Retention.Line), "sql")
	}
	if x := r.Memory.Retention; x.Set && out.Type != "memory" {
		other(x.Line, "memory")
	}
	return out
}

// firstLine returns the least of the lines that are set (above 0), or 0.
func firstLine(lines ...int) int {
	first := 0
	for _, l := range lines {
		if l > 0 && (first == 0 || l < first) {
			first = l
		}
	}
	return first
}

func (v *validator) redis(r *redisT) *Redis {
	out := &Redis{Addr: r.Addr.V, Username: r.Username.V, DB: r.DB.V, Prefix: r.Prefix.V}
	if !r.Addr.Set {
		v.fail(r.Line, "redis.addr", "missing: the Redis server's host:port")
	}
	v.addr(r.Addr, "redis.addr")
	out.Password = v.secret(r.Password, "redis.password")
	v.nonNeg(r.DB, "redis.db")
	if strings.ContainsAny(out.Prefix, "{}") {
		v.fail(r.Prefix.Line, "redis.prefix", "must not contain braces")
	}
	return out
}

func (v *validator) dashboard(d *dashboardT) Dashboard {
	out := Dashboard{Enabled: d.Enabled.V, Path: d.Path.V, Actions: d.Actions.V}
	if out.Path == "" {
		out.Path = DefaultDashboardPath
	}
	if !strings.HasPrefix(out.Path, "/") || !strings.HasSuffix(out.Path, "/") || reserved(strings.TrimSuffix(out.Path, "/")) {
		v.fail(d.Path.Line, "dashboard.path", "want a path such as /dashboard/, got %s", shown(d.Path))
	}
	out.Users = v.users(d.Users, "dashboard.users")
	if out.Enabled && len(out.Users) == 0 {
		v.fail(d.Enabled.Line, "dashboard.users", "the dashboard needs at least one user: it is never open to all")
	}
	return out
}

// users validates the logins of field (dashboard.users, admin.users).
func (v *validator) users(in []userT, field string) []User {
	var out []User
	for i, u := range in {
		at := fmt.Sprintf("%s[%d]", field, i)
		usr := User{Name: u.Name.V}
		if usr.Name == "" || strings.Contains(usr.Name, ":") {
			v.fail(u.Name.Line, at+".name", "want a user name without ':'")
		}
		b, err := hex.DecodeString(u.SHA256.V)
		if err != nil || len(b) != 32 {
			v.fail(u.SHA256.Line, at+".password_sha256", "want 64 hex digits (apipool hash-token prints them)")
		}
		copy(usr.Hash[:], b)
		out = append(out, usr)
	}
	return out
}

// CheckKey checks a key given to the admin API as the key file checks an
// ID and a secret (id is the ID without the "upstream/" prefix). Its
// error never shows the secret, nor an ID that looks like one.
func CheckKey(id, secret string) error {
	switch {
	case !validName(id):
		return errors.New("the key ID is not a name of letters, digits, '-', '_' or '.'")
	case looksLikeKey(id):
		return errors.New("the key ID looks like a secret")
	case secret == "":
		return errors.New("the secret is empty")
	case len(strings.Fields(secret)) != 1 || strings.TrimSpace(secret) != secret:
		return errors.New("the secret holds spaces")
	case strings.ContainsFunc(secret, func(r rune) bool { return r < 0x21 || r > 0x7e }):
		return errors.New("the secret holds characters other than printable ASCII")
	}
	return nil
}

func (v *validator) telemetry(t *telemetryT) Telemetry {
	out := Telemetry{ServiceName: t.ServiceName.V, Prometheus: t.Prometheus.V}
	if out.ServiceName == "" {
		out.ServiceName = "apipool"
	}
	if o := t.OTLP; o != nil {
		out.OTLP = &OTLP{Endpoint: strings.TrimRight(o.Endpoint.V, "/"), Traces: o.Traces.V || !o.Traces.Set, Metrics: o.Metrics.V || !o.Metrics.Set, MetricInterval: durOr(o.Interval, time.Minute)}
		if o.Endpoint.Set {
			if _, problem := targetURL(o.Endpoint.V); problem == notHTTP || problem == noHost {
				v.fail(o.Endpoint.Line, "telemetry.otlp.endpoint", "want an http or https URL with a host and no user, query or fragment, such as http://collector:4318: %s%s", problem, fromVars(o.Endpoint))
			}
		}
	}
	return out
}

// StrategyNames are the names apipool.ParseStrategy reads, in the order of
// apipool's Strategy constants.
var StrategyNames = []string{"round-robin", "random", "weighted", "least-in-flight", "most-quota-left"}

// didYouMean is "; did you mean NAME?" when x is a near miss of one of
// names, or "".
func didYouMean(x Value[string], names []string) string {
	if x.fromVars() {
		return ""
	}
	if s := suggest(x.V, names); s != "" {
		return "; did you mean " + s + "?"
	}
	return ""
}

// fromVars says, for an error, that x's value came from variables, which
// it names: the value is not shown.
func fromVars[T any](x Value[T]) string {
	if r := refs(x.Raw); len(r) > 0 {
		return " (the value comes from " + strings.Join(r, ", ") + " and is not shown)"
	}
	return ""
}

// The problems of a URL, as targetURL says them: never with the URL,
// whose user part or query may hold a secret.
const (
	notURL   = "it is not a URL"
	notHTTP  = "its scheme is not http or https"
	noHost   = "it has no host"
	withUser = "it holds a user or a password (user:password@): keys go in keys, and the proxy injects them"
	withQry  = "it holds a query (?...), which may carry a key: give the base URL, and inject: query:NAME for a key in the query"
	withFrag = "it has a fragment (#...)"
)

// targetURL parses s as an upstream's base URL, or says what is wrong
// with it.
func targetURL(s string) (*url.URL, string) {
	t, err := url.Parse(s)
	switch {
	case err != nil:
		return nil, notURL
	case t.Scheme != "http" && t.Scheme != "https":
		return nil, notHTTP
	case t.Host == "":
		return nil, noHost
	case t.User != nil:
		return nil, withUser
	case t.RawQuery != "" || t.ForceQuery:
		return nil, withQry
	case t.Fragment != "":
		return nil, withFrag
	}
	return t, ""
}

// envName checks x, a setting that names an environment variable holding
// what, and returns the name, or "" after saying what is wrong with it.
// It never quotes a name that is not one: keys are written there by
// mistake.
func (v *validator) envName(x Value[string], field, what, example string) string {
	if r := refs(x.Raw); len(r) > 0 {
		if len(r) == 1 && wholeVar(x.Raw) && r[0] != "${...}" {
			v.fail(x.Line, field, "names the variable that holds %s: write %s, not %s, which is replaced by the variable's value", what, strings.TrimSuffix(strings.TrimPrefix(r[0], "${"), "}"), r[0])
		} else {
			v.fail(x.Line, field, "names the variable that holds %s: write its name, such as %s, without ${...}", what, example)
		}
		return ""
	}
	if p := nameProblem(x.V); p != "" {
		v.fail(x.Line, field, "the value is not a valid environment variable name (not shown, as it may be a secret): %s; write the name of the variable that holds %s, such as %s", p, what, example)
		return ""
	}
	return x.V
}

// noScrub turns scrub off, for tests of the messages themselves.
var noScrub bool

// scrub replaces, in the errors, any value of at least 8 bytes that was
// read from the environment, and each item of it (as keys are listed), by
// "[not shown]". No error is meant to quote one: this is the last guard.
func scrub(errs Errors, values []string) {
	var secrets []string
	for _, v := range values {
		secrets = append(secrets, v)
		for _, item := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == '\n' }) {
			secrets = append(secrets, strings.TrimSpace(item))
			secrets = append(secrets, strings.Fields(item)...)
		}
	}
	// The longest first, so that a value is not left half replaced.
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	for _, e := range errs {
		for _, s := range secrets {
			if len(s) >= 8 {
				e.Reason = strings.ReplaceAll(e.Reason, s, "[not shown]")
				e.Field = strings.ReplaceAll(e.Field, s, "[not shown]")
			}
		}
	}
}

// configDir returns the absolute directory of the config file name.
func configDir(name string) string {
	dir := filepath.Dir(name)
	if a, err := filepath.Abs(dir); err == nil {
		dir = a
	}
	return dir
}

// resolve returns path relative to the config file's directory, unless
// it is empty or absolute.
func (v *validator) resolve(path string) string {
	if path == "" || filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(v.dir, path)
}

// sqliteDSN resolves the file of a SQLite DSN ("usage.db",
// "file:usage.db?mode=rwc") against the config file's directory, and
// returns the DSN and its file ("" for a database in memory).
func (v *validator) sqliteDSN(dsn string) (string, string) {
	if strings.Contains(dsn, ":memory:") || strings.Contains(dsn, "mode=memory") {
		return dsn, ""
	}
	scheme := ""
	rest := dsn
	if r, ok := strings.CutPrefix(dsn, "file:"); ok {
		scheme, rest = "file:", r
	}
	path, query, hasQuery := strings.Cut(rest, "?")
	if scheme != "" && strings.HasPrefix(path, "//") {
		// file://host/path or file:///path: a URL, taken as it is.
		return dsn, strings.TrimPrefix(path, "//localhost")
	}
	if path == "" {
		return dsn, ""
	}
	path = v.resolve(path)
	out := scheme + path
	if hasQuery {
		out += "?" + query
	}
	return out, path
}

// pathShown reports whether an error may show the path x names: not
// when it came from a variable, nor when it looks like a key written in
// the wrong place (a DSN's query aside).
func pathShown(x Value[string]) bool {
	p, _, _ := strings.Cut(x.V, "?")
	return len(refs(x.Raw)) == 0 && !looksLikeKey(p) && !strings.ContainsAny(p, "@=&#\n")
}

// pathLabel names the path x gives, resolved to file, in an error: file,
// or why it is not shown.
func pathLabel(x Value[string], file string) string {
	if r := refs(x.Raw); len(r) > 0 {
		return "named by " + strings.Join(r, ", ")
	}
	if !pathShown(x) {
		return "(its name is not shown: it looks like a secret, not a path)"
	}
	return file
}

// maxPEMFile bounds a certificate or CA file.
const maxPEMFile = 1 << 20

// tls checks a listener's TLS settings: the files are read now, so that
// a bad one is an error of the file, with its line.
func (v *validator) tls(t *tlsT, at string) *TLS {
	out := &TLS{MinVersion: tls.VersionTLS12}
	switch t.MinVersion.V {
	case "", "1.2":
	case "1.3":
		out.MinVersion = tls.VersionTLS13
	case "1.0", "1.1":
		v.fail(t.MinVersion.Line, at+".min_version", "TLS below 1.2 is refused: want 1.2 or 1.3")
	default:
		v.fail(t.MinVersion.Line, at+".min_version", "want 1.2 or 1.3, got %s", shown(t.MinVersion))
	}
	var certPEM, keyPEM []byte
	if !t.CertFile.Set || t.CertFile.V == "" {
		v.fail(t.Line, at+".cert_file", "missing: the PEM file of the certificate (and its chain)")
	} else {
		out.CertFile = v.resolve(t.CertFile.V)
		certPEM = v.pemFile(t.CertFile, out.CertFile, at+".cert_file", "the certificate file")
	}
	if !t.KeyFile.Set || t.KeyFile.V == "" {
		v.fail(t.Line, at+".key_file", "missing: the PEM file of the certificate's private key")
	} else {
		out.KeyFile = v.resolve(t.KeyFile.V)
		b, err := ReadKeyFile(out.KeyFile)
		if err != nil {
			v.fail(t.KeyFile.Line, at+".key_file", "the key file %s: %v", pathLabel(t.KeyFile, out.KeyFile), err)
		}
		keyPEM = b
	}
	if certPEM != nil && keyPEM != nil {
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			// The tls package's messages say what is wrong, never what
			// the files hold.
			v.fail(t.KeyFile.Line, at, "the certificate and key do not load as a pair: %v", err)
		}
	}
	if t.ClientCAFile.Set {
		out.ClientCAFile = v.resolve(t.ClientCAFile.V)
		if b := v.pemFile(t.ClientCAFile, out.ClientCAFile, at+".client_ca_file", "the client CA file"); b != nil {
			out.ClientCAs = x509.NewCertPool()
			if !out.ClientCAs.AppendCertsFromPEM(b) {
				v.fail(t.ClientCAFile.Line, at+".client_ca_file", "the client CA file %s holds no PEM certificate", pathLabel(t.ClientCAFile, out.ClientCAFile))
			}
		}
	}
	return out
}

// pemFile reads a certificate file, or says why it cannot.
func (v *validator) pemFile(x Value[string], file, field, what string) []byte {
	f, err := os.Open(file)
	if err != nil {
		v.fail(x.Line, field, "%s %s: %v", what, pathLabel(x, file), errors.Unwrap(err))
		return nil
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	switch {
	case err != nil:
		v.fail(x.Line, field, "%s %s: cannot read it", what, pathLabel(x, file))
		return nil
	case len(b) > maxPEMFile:
		v.fail(x.Line, field, "%s %s: larger than %d bytes", what, pathLabel(x, file), maxPEMFile)
		return nil
	}
	return b
}
