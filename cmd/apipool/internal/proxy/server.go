package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/propagation"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/webhook"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/redisstate"
)

// Options are a Server's settings that do not come from the file.
type Options struct {
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Recorder, when set, replaces the configured store (tests). The
	// server closes it on Shutdown.
	Recorder recorder.Recorder
	// Base, when set, replaces each upstream's base transport (tests,
	// benchmarks).
	Base http.RoundTripper
	// Dashboard, when set, builds the dashboard handler of a pool (serve
	// uses DashboardHandler); the server mounts it under the configured
	// path, behind the configured users' basic auth. Nil mounts none.
	Dashboard func(upstream string, pool *apipool.Transport) http.Handler
	// PoolOptions, when set, gives more options for an upstream's pool,
	// applied after those of the file (tests; a program that embeds the
	// proxy).
	PoolOptions func(upstream string) []apipool.Option
}

// Server is the proxy. Create it with New; it is safe for concurrent use.
type Server struct {
	log       *slog.Logger
	cfgMu     sync.Mutex // serialises Reload
	cfg       atomic.Pointer[config.Config]
	tokens    atomic.Pointer[tokenSet]
	scrub     atomic.Pointer[scrubIndex] // the pool secrets answers are scrubbed of
	upstreams []*upstream
	byName    map[string]*upstream
	rec       recorder.Recorder
	stats     recorder.Stats
	redis     *redis.Client
	tel       *telemetry
	hooks     *webhook.Sender               // the alerts' webhooks (alerts.go); nil without
	clients   *apipool.ClientBudgets        // the tokens' budgets, every pool's (budgets.go)
	poolOpts  func(string) []apipool.Option // Options.PoolOptions
	main      http.Handler
	admin     http.Handler // nil: the admin endpoints are on main
	tlsMain   *tls.Config  // nil: plain HTTP
	tlsAdmin  *tls.Config
	ready     atomic.Bool
	closing   atomic.Bool
	stampMu   sync.Mutex
	stamps    map[string]stamp // the watched files as last loaded

	// sockets ends when the server shuts down: upgraded connections
	// (WebSockets), which http.Server.Shutdown neither waits for nor
	// closes, close then.
	sockets      context.Context
	closeSockets context.CancelFunc

	srvMu    sync.Mutex
	servers  []*http.Server
	shutOnce sync.Once
	shutErr  error
}

// New builds a server for cfg: it opens the recorder, the shared state and
// the telemetry exporters, and creates one pool per upstream.
func New(ctx context.Context, cfg *config.Config, o Options) (_ *Server, err error) {
	s := &Server{log: o.Logger, byName: map[string]*upstream{}}
	s.sockets, s.closeSockets = context.WithCancel(context.Background())
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.cfg.Store(cfg)
	s.tokens.Store(newTokenSet(cfg.Tokens, nil))
	defer func() {
		if err != nil {
			s.closeAll(context.Background())
		}
	}()
	if s.tel, err = newTelemetry(ctx, cfg.Telemetry); err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	s.rec = o.Recorder
	if s.rec == nil {
		if s.rec, err = openRecorder(ctx, cfg.Recorder, s.log.With("component", "recorder"), true); err != nil {
			return nil, err
		}
	}
	s.stats, _ = s.rec.(recorder.Stats)
	if cfg.TLS != nil {
		if s.tlsMain, err = tlsConfig(cfg.TLS, s.log.With("listener", "main")); err != nil {
			return nil, err
		}
	}
	if cfg.AdminTLS != nil {
		if s.tlsAdmin, err = tlsConfig(cfg.AdminTLS, s.log.With("listener", "admin")); err != nil {
			return nil, err
		}
	}
	if cfg.Redis != nil {
		s.redis = redisClient(cfg.Redis)
	}
	if s.hooks, err = newWebhooks(cfg.Alerts, s.log); err != nil {
		return nil, fmt.Errorf("alerts: %w", err)
	}
	if s.clients, err = newClientBudgets(cfg, s.redis); err != nil {
		return nil, fmt.Errorf("tokens' budgets: %w", err)
	}
	s.poolOpts = o.PoolOptions
	for _, uc := range cfg.Upstreams {
		up, err := s.newUpstream(uc, cfg, o.Base)
		if err != nil {
			return nil, err
		}
		s.upstreams = append(s.upstreams, up)
		s.byName[uc.Name] = up
	}
	s.updateScrub(nil)
	s.main, s.admin = s.handlers(cfg, o.Dashboard)
	if cfg.Dashboard.Enabled && o.Dashboard == nil {
		s.log.Warn("dashboard.enabled is set, but this build has no dashboard")
	}
	s.stamps = s.look()
	s.ready.Store(true)
	return s, nil
}

func (s *Server) newUpstream(uc config.Upstream, cfg *config.Config, base http.RoundTripper) (*upstream, error) {
	if base == nil {
		base = baseTransport(uc)
	}
	opts := append(poolOptions(uc, cfg.FingerprintKey),
		apipool.WithBase(base),
		apipool.WithRecorder(recorder.KeepOpen(s.rec)),
		apipool.WithLogger(s.log.With("upstream", uc.Name)),
		apipool.WithMeterProvider(s.tel.mp),
		apipool.WithTracerProvider(s.tel.tp),
		apipool.WithPropagators(propagation.TraceContext{}),
		s.alertOption(uc, cfg.Alerts),
		apipool.WithClientBudgets(s.clients),
	)
	if p := probe(uc); p != nil {
		opts = append(opts, apipool.WithProbe(p, uc.Probe.Interval))
	}
	ro, err := routingOptions(uc) // routing.go
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", uc.Name, err)
	}
	opts = append(opts, ro...)
	if s.redis != nil {
		prefix := cfg.Redis.Prefix
		if prefix == "" {
			prefix = redisstate.DefaultPrefix
		}
		st, err := redisstate.New(s.redis, redisstate.WithPrefix(prefix+":"+uc.Name))
		if err != nil {
			return nil, fmt.Errorf("upstream %s: redis: %w", uc.Name, err)
		}
		opts = append(opts, apipool.WithSharedState(st))
	}
	if s.poolOpts != nil {
		opts = append(opts, s.poolOpts(uc.Name)...)
	}
	pool, err := apipool.New(uc.Keys, opts...)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", uc.Name, err)
	}
	up := &upstream{cfg: uc, pool: pool, keys: map[string]apipool.Secret{}, fileKeys: map[string]bool{}, keyLimits: uc.KeyLimits, keyBudgets: uc.KeyBudgets}
	for _, k := range uc.Keys {
		up.keys[k.ID] = k.Secret
		up.fileKeys[k.ID] = true
	}
	up.proxy = &httputil.ReverseProxy{
		Rewrite:        up.rewrite,
		Transport:      pool,
		BufferPool:     bufferPool{},
		ErrorHandler:   s.proxyError,
		ModifyResponse: s.modifyResponse,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return up, nil
}

// Handler returns the proxy's handler: the upstreams, and the admin
// endpoints unless they have a listener of their own.
func (s *Server) Handler() http.Handler { return s.main }

// AdminHandler returns the admin endpoints' handler (/healthz, /readyz,
// /metrics, the dashboard) when the config gives them a listener of their
// own, else nil.
func (s *Server) AdminHandler() http.Handler { return s.admin }

// Pool returns the pool of the named upstream, or nil. Change its keys
// through the key file and Reload, or the admin API, not with its AddKey:
// answers are scrubbed of the keys the server knows of (see scrub.go).
func (s *Server) Pool(name string) *apipool.Transport {
	if up := s.byName[name]; up != nil {
		return up.pool
	}
	return nil
}

// Recorder returns the recorder the server records to.
func (s *Server) Recorder() recorder.Recorder { return s.rec }

// Ready reports whether the server takes requests (false once Shutdown
// began).
func (s *Server) Ready() bool { return s.ready.Load() }

// httpServer returns an http.Server for h with the config's timeouts.
func (s *Server) httpServer(h http.Handler) *http.Server {
	c := s.cfg.Load().Server
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: c.ReadHeaderTimeout,
		// ReadTimeout stays 0: a deadline on the connection would cut
		// long streamed answers. The handler bounds each body's reading
		// by server.read_timeout instead, and clears it at the body's end.
		WriteTimeout:   c.WriteTimeout,
		IdleTimeout:    c.IdleTimeout,
		MaxHeaderBytes: c.MaxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// Serve serves the proxy on ln, and the admin endpoints on adminLn when
// the config gives them a listener (adminLn is then required), each
// with TLS when the config gives it (tls, admin.tls). It returns
// after Shutdown, with nil, or with the first listener's error.
func (s *Server) Serve(ln, adminLn net.Listener) error {
	if s.closing.Load() {
		return http.ErrServerClosed
	}
	if (s.admin != nil) != (adminLn != nil) {
		return errors.New("proxy: an admin listener is needed exactly when admin.listen is set")
	}
	type served struct {
		srv *http.Server
		ln  net.Listener
	}
	if s.tlsMain != nil {
		ln = tls.NewListener(ln, s.tlsMain)
	}
	list := []served{{s.httpServer(s.main), ln}}
	if adminLn != nil {
		if s.tlsAdmin != nil {
			adminLn = tls.NewListener(adminLn, s.tlsAdmin)
		}
		list = append(list, served{s.httpServer(s.admin), adminLn})
	}
	s.srvMu.Lock()
	for _, x := range list {
		s.servers = append(s.servers, x.srv)
	}
	s.srvMu.Unlock()
	errc := make(chan error, len(list))
	for _, x := range list {
		go func() { errc <- x.srv.Serve(x.ln) }()
	}
	var first error
	for range list {
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) && first == nil {
			first = err
			go s.Shutdown(context.Background())
		}
	}
	return first
}

// Shutdown stops the server gracefully: /readyz turns 503, the listeners
// close, requests in flight finish (within ctx; past it their connections
// are closed), then the pools close and the recorder is flushed, within
// the config's shutdown_timeout from then (see closeAll: the pools get
// half of it, the recorder the rest, and 2s at least). It is safe to call more than
// once; later calls return the first's result.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutOnce.Do(func() {
		s.closing.Store(true)
		s.ready.Store(false)
		s.srvMu.Lock()
		servers := s.servers
		s.srvMu.Unlock()
		var errs []error
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, srv := range servers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := srv.Shutdown(ctx); err != nil {
					srv.Close()
					mu.Lock()
					errs = append(errs, fmt.Errorf("requests in flight: %w", err))
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		s.closeSockets()
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Load().Server.ShutdownTimeout)
		defer cancel()
		if err := s.closeAll(fctx); err != nil {
			errs = append(errs, err)
		}
		s.shutErr = errors.Join(errs...)
		s.log.Info("stopped", "error", s.shutErr)
	})
	return s.shutErr
}

// recorderFloor is the least time closeAll gives the recorder to flush,
// even when that runs past its context's deadline.
const recorderFloor = 2 * time.Second

// closeAll closes the pools, then the webhooks and the recorder, then the
// shared state and the exporters. The pools close side by side, within
// half of the time ctx leaves: a pool held up (a probe that does not end,
// say) delays neither the others nor what follows. The webhooks and the
// recorder then close side by side with the time left, the recorder with
// recorderFloor at least: however the pools end, the events they handed
// the recorder get their flush.
func (s *Server) closeAll(ctx context.Context) error {
	pctx, cancel := ctx, context.CancelFunc(func() {})
	if dl, ok := ctx.Deadline(); ok {
		pctx, cancel = context.WithDeadline(ctx, time.Now().Add(time.Until(dl)/2))
	}
	poolErrs := make([]error, len(s.upstreams))
	var wg sync.WaitGroup
	for i, up := range s.upstreams {
		wg.Go(func() {
			if err := up.pool.Close(pctx); err != nil {
				poolErrs[i] = fmt.Errorf("upstream %s: %w", up.cfg.Name, err)
			}
			up.pool.CloseIdleConnections()
		})
	}
	wg.Wait()
	cancel()
	errs := poolErrs
	var hookErr, recErr error
	// The webhooks after the pools: they hand it their last alerts.
	wg.Go(func() { hookErr = s.closeWebhooks(ctx) })
	if s.rec != nil {
		wg.Go(func() {
			rctx := ctx
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < recorderFloor || ctx.Err() != nil {
				var cancel context.CancelFunc
				rctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), recorderFloor)
				defer cancel()
			}
			if err := s.rec.Close(rctx); err != nil {
				recErr = fmt.Errorf("recorder: %w", err)
			}
			if d, ok := s.rec.(recorder.DropCounter); ok && d.Dropped() > 0 {
				s.log.Warn("recorder dropped events", "dropped", d.Dropped())
			}
		})
	}
	wg.Wait()
	errs = append(errs, hookErr, recErr)
	if s.redis != nil {
		s.redis.Close()
	}
	if s.tel != nil {
		if err := s.tel.close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("telemetry: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Reload reads the config file again and applies its tokens and keys.
// Requests in flight are not disturbed. Other changes need a restart; they
// are logged. A file with errors changes nothing.
func (s *Server) Reload() error {
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	old := s.cfg.Load()
	if old.Path == "" {
		return errors.New("proxy: the config has no file to reload from")
	}
	stamps := s.look()
	c, err := config.Load(old.Path)
	if err != nil {
		s.log.Error("reload failed; the running config stays", "error", err)
		return err
	}
	// The new keys are scrubbed from the first answer that may use them.
	var incoming []apipool.Key
	for _, uc := range c.Upstreams {
		if s.byName[uc.Name] != nil {
			incoming = append(incoming, uc.Keys...)
		}
	}
	s.updateScrub(incoming)
	defer s.updateScrub(nil)
	var errs []error
	for _, uc := range c.Upstreams {
		up := s.byName[uc.Name]
		if up == nil {
			s.log.Warn("reload: a new upstream needs a restart", "upstream", uc.Name)
			continue
		}
		if uc.Target.String() != up.cfg.Target.String() || uc.Prefix != up.cfg.Prefix || uc.Host != up.cfg.Host {
			s.log.Warn("reload: a changed target or route needs a restart", "upstream", uc.Name)
		}
		if !sameRouting(uc, up.cfg) {
			s.log.Warn("reload: a changed routing section needs a restart (the keys' tiers and models are applied with the keys)", "upstream", uc.Name)
		}
		if !sameUsage(uc, up.cfg) {
			s.log.Warn("reload: a changed usage section or prices file needs a restart", "upstream", uc.Name)
		}
		up.mu.Lock()
		up.keyLimits, up.keyBudgets = uc.KeyLimits, uc.KeyBudgets
		up.mu.Unlock()
		if _, _, err := up.reloadKeys(uc.Keys, s.log); err != nil {
			// Such as models on the keys of a pool started without
			// routing.model. The error names keys by ID, never a secret.
			s.log.Error("reload: the pool refused the new keys; it keeps its keys", "upstream", uc.Name, "error", err)
			errs = append(errs, err)
		}
	}
	if !sameAlerts(c.Alerts, old.Alerts) {
		s.log.Warn("reload: a changed alerts section needs a restart")
	}
	if !sameTLS(c.TLS, old.TLS) || !sameTLS(c.AdminTLS, old.AdminTLS) {
		s.log.Warn("reload: a changed tls or admin.tls setting needs a restart (a changed certificate file is read at the next handshake)")
	}
	s.tokens.Store(newTokenSet(c.Tokens, s.tokens.Load()))
	if err := s.clients.SetBudgets(config.ClientBudgets(c.Tokens)); err != nil {
		errs = append(errs, fmt.Errorf("tokens' budgets: %w", err)) // config.Load checked them: not expected
	}
	// Keep the running settings but the tokens and keys.
	nc := *old
	nc.Tokens = c.Tokens
	s.cfg.Store(&nc)
	s.stampMu.Lock()
	s.stamps = stamps
	s.stampMu.Unlock()
	s.log.Info("reloaded", "tokens", len(c.Tokens))
	return errors.Join(errs...)
}

// updateScrub builds the index of the secrets answers are scrubbed of:
// every upstream's keys, the keys removed less than the upstream's timeout
// ago (a request may still use them), and extra.
func (s *Server) updateScrub(extra []apipool.Key) {
	now := time.Now()
	var list []string
	for _, up := range s.upstreams {
		up.mu.Lock()
		for _, sec := range up.keys {
			list = append(list, sec.Reveal())
		}
		kept := up.retired[:0]
		for _, r := range up.retired {
			if now.Before(r.until) {
				kept = append(kept, r)
				list = append(list, r.secret.Reveal())
			}
		}
		clear(up.retired[len(kept):])
		up.retired = kept
		up.mu.Unlock()
	}
	for _, k := range extra {
		list = append(list, k.Secret.Reveal())
	}
	s.scrub.Store(newScrubIndex(list))
}

// watchedFiles returns the files whose change triggers a reload.
func (s *Server) watchedFiles() []string {
	c := s.cfg.Load()
	files := []string{}
	if c.Path != "" {
		files = append(files, c.Path)
	}
	for _, u := range c.Upstreams {
		if u.KeyFile != "" {
			files = append(files, u.KeyFile)
		}
		if u.Usage.PricesFile != "" {
			files = append(files, u.Usage.PricesFile) // its change is logged as needing a restart
		}
	}
	return files
}

// stamp identifies a version of a watched file.
type stamp struct {
	size  int64
	mtime time.Time
	ino   any
}

// look stamps the watched files.
func (s *Server) look() map[string]stamp {
	m := map[string]stamp{}
	for _, f := range s.watchedFiles() {
		if st, err := os.Stat(f); err == nil {
			m[f] = stamp{st.Size(), st.ModTime(), inode(st)}
		}
	}
	return m
}

// Watch reloads when the config file or a key file changes from what was
// last loaded (checked every interval: size, modification time and inode),
// until ctx ends.
func (s *Server) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := s.look()
		s.stampMu.Lock()
		last := s.stamps
		s.stampMu.Unlock()
		changed := len(now) != len(last)
		for f, st := range now {
			if last[f] != st {
				changed = true
			}
		}
		if changed {
			s.log.Info("a watched file changed; reloading")
			s.stampMu.Lock()
			s.stamps = now // a file with errors is not retried until it changes again
			s.stampMu.Unlock()
			s.Reload()
		}
	}
}

// bufferPool lends ReverseProxy its copy buffers.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }
