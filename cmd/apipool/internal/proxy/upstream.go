package proxy

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
)

// upstream is one configured API: its pool and the reverse proxy in front
// of it.
type upstream struct {
	cfg   config.Upstream
	pool  *apipool.Transport
	proxy *httputil.ReverseProxy
	attrs attrCache // the request metrics' attribute sets

	mu       sync.Mutex                // serialises key reloads
	keys     map[string]apipool.Secret // ID -> secret of the keys in the pool (the key file's, and the admin API's)
	fileKeys map[string]bool           // the IDs of the key file's keys, as last loaded (the admin API shows it)
	// keyLimits and keyBudgets are key_limits and key_budgets as last
	// loaded (cfg keeps those of the start): the admin API's keys get them.
	keyLimits  config.KeyLimits
	keyBudgets apipool.Budget
	retired    []retiredSecret // removed keys, still scrubbed from answers
}

// retiredSecret is a key's secret taken out of the pool, which a request
// may still use until it ends: until then answers are scrubbed of it.
type retiredSecret struct {
	secret apipool.Secret
	until  time.Time
}

// baseTransport is the transport that sends an upstream's requests.
func baseTransport(u config.Upstream) *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: u.ResponseHeaderTimeout,
		// Pass the body as the upstream sent it: the caller asked for
		// (or did not ask for) compression itself. But for a token
		// reader, which reads JSON: the caller's Accept-Encoding is
		// not passed on, the transport asks for gzip and decodes it
		// (routing.go).
		DisableCompression: !readsTokens(u),
	}
}

// poolOptions returns the pool options an upstream's config asks for.
func poolOptions(u config.Upstream, fingerprintKey []byte) []apipool.Option {
	opts := []apipool.Option{
		apipool.WithHosts(u.Target.Host),
		apipool.WithStrategy(u.Strategy),
		apipool.WithCooldown(u.Cooldown, u.MaxCooldown),
		apipool.WithRetryNonIdempotent(u.RetryNonIdempotent),
	}
	switch u.Inject.Kind {
	case "header":
		opts = append(opts, apipool.WithHeader(u.Inject.Name))
	case "query":
		opts = append(opts, apipool.WithQueryParam(u.Inject.Name))
	default:
		opts = append(opts, apipool.WithBearer())
	}
	if u.MaxAttempts > 0 {
		opts = append(opts, apipool.WithMaxAttempts(u.MaxAttempts))
	}
	if u.MaxWait != nil {
		opts = append(opts, apipool.WithMaxWait(*u.MaxWait))
	}
	if u.MaxBufferedBody != nil {
		opts = append(opts, apipool.WithMaxBufferedBody(*u.MaxBufferedBody))
	}
	if u.Classifier.RateLimitCodes != nil || u.Classifier.InvalidKeyCodes != nil {
		opts = append(opts, apipool.WithClassifier(u.Classifier))
	}
	if fingerprintKey != nil {
		opts = append(opts, apipool.WithFingerprintKey(fingerprintKey))
	}
	return opts
}

// probe returns the pool's probe for check, or nil.
func probe(u config.Upstream) apipool.Probe {
	if u.Probe == nil {
		return nil
	}
	return apipool.ProbeRequest(u.Probe.Method, u.Target.String()+u.Probe.Path)
}

// reloadKeys makes keys the pool's keys, in one step (SetKeys): the key
// file wins, so keys the admin API added and the file does not name go.
// New IDs are added, missing ones removed, and an ID whose secret changed
// is a new key; the pool is never empty meanwhile, and a secret may move
// from one ID to another. Requests in flight finish with the key they
// have.
func (up *upstream) reloadKeys(keys []apipool.Key, log *slog.Logger) (added, removed int, err error) {
	up.mu.Lock()
	defer up.mu.Unlock()
	if err := up.pool.SetKeys(keys); err != nil {
		return 0, 0, fmt.Errorf("upstream %s: %w", up.cfg.Name, err)
	}
	want := make(map[string]apipool.Secret, len(keys))
	up.fileKeys = make(map[string]bool, len(keys))
	for _, k := range keys {
		want[k.ID] = k.Secret
		up.fileKeys[k.ID] = true
	}
	for id, sec := range up.keys {
		if w, ok := want[id]; !ok || w != sec {
			up.retired = append(up.retired, retiredSecret{sec, time.Now().Add(up.cfg.Timeout + time.Minute)})
			removed++
		}
	}
	for id, sec := range want {
		if old, ok := up.keys[id]; !ok || old != sec {
			added++
		}
	}
	up.keys = want
	if added+removed > 0 {
		log.Info("keys reloaded", "upstream", up.cfg.Name, "added", added, "removed", removed, "keys", len(up.keys))
	}
	return added, removed, err
}
