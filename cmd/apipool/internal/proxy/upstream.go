package proxy

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
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
	retired  []retiredSecret           // removed keys, still scrubbed from answers
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
		// (or did not ask for) compression itself.
		DisableCompression: true,
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

// reloadKeys brings the pool's keys to keys: new IDs are added, missing
// ones removed, and an ID whose secret changed is replaced. Requests in
// flight finish with the key they have.
func (up *upstream) reloadKeys(keys []apipool.Key, log *slog.Logger) (added, removed int, err error) {
	up.mu.Lock()
	defer up.mu.Unlock()
	want := make(map[string]apipool.Key, len(keys))
	up.fileKeys = make(map[string]bool, len(keys))
	for _, k := range keys {
		want[k.ID] = k
		up.fileKeys[k.ID] = true
	}
	// Add first, so the pool is never empty while a key file is
	// rewritten.
	var errs []string
	retire := func(sec apipool.Secret) {
		up.retired = append(up.retired, retiredSecret{sec, time.Now().Add(up.cfg.Timeout + time.Minute)})
	}
	for _, k := range keys {
		old, ok := up.keys[k.ID]
		if ok && old == k.Secret {
			continue
		}
		if ok {
			if err := up.pool.RemoveKey(k.ID); err != nil {
				errs = append(errs, fmt.Sprintf("remove %s: %v", k.ID, err))
				continue
			}
			retire(old)
			removed++
		}
		if err := up.pool.AddKey(k); err != nil {
			errs = append(errs, fmt.Sprintf("add %s: %v", k.ID, err))
			delete(up.keys, k.ID)
			continue
		}
		up.keys[k.ID] = k.Secret
		added++
	}
	for id := range up.keys {
		if _, ok := want[id]; ok {
			continue
		}
		if err := up.pool.RemoveKey(id); err != nil {
			errs = append(errs, fmt.Sprintf("remove %s: %v", id, err))
			continue
		}
		retire(up.keys[id])
		delete(up.keys, id)
		removed++
	}
	if len(errs) > 0 {
		err = fmt.Errorf("upstream %s: %s", up.cfg.Name, strings.Join(errs, "; "))
	}
	if added+removed > 0 {
		log.Info("keys reloaded", "upstream", up.cfg.Name, "added", added, "removed", removed, "keys", len(up.keys))
	}
	return added, removed, err
}
