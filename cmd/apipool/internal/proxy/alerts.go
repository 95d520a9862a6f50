package proxy

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/webhook"
)

// Alerts: each pool reports its keys' state changes (apipool.WithAlerts);
// the server logs every alert and hands it to the webhook sender, which
// POSTs it to the configured receivers (package webhook). Both run on the
// pool's alert goroutine or the sender's own, never on a request's.

// webhookBackoffMin and webhookBackoffMax bound the sender's retry waits
// (0: the webhook package's defaults); tests shorten them.
var webhookBackoffMin, webhookBackoffMax time.Duration

// newWebhooks starts the sender of cfg's webhooks, or returns nil when
// there are none.
func newWebhooks(cfg config.Alerts, log *slog.Logger) (*webhook.Sender, error) {
	if len(cfg.Webhooks) == 0 {
		return nil, nil
	}
	wc := webhook.Config{BackoffMin: webhookBackoffMin, BackoffMax: webhookBackoffMax, Logger: log.With("component", "webhook")}
	for i, w := range cfg.Webhooks {
		name := w.Name
		if name == "" {
			name = fmt.Sprintf("alerts.webhooks[%d] %s", i, w.URL.Host)
		}
		wc.Receivers = append(wc.Receivers, webhook.Receiver{Name: name, URL: w.URL, Secret: w.Secret, Kinds: w.Kinds, Timeout: w.Timeout, MaxAttempts: w.MaxAttempts})
	}
	return webhook.New(wc)
}

// alertOption is the pool option that reports upstream uc's alerts to the
// server.
func (s *Server) alertOption(uc config.Upstream, cfg config.Alerts) apipool.Option {
	return apipool.WithAlerts(s.alert, apipool.AlertSettings{Pool: uc.Name, CoolingThreshold: cfg.CoolingThreshold, NoKeyInterval: cfg.NoKeyInterval})
}

// alert logs a and sends it to the webhooks. It runs on the pool's alert
// goroutine.
func (s *Server) alert(a apipool.Alert) {
	level := slog.LevelWarn
	switch a.Kind {
	case apipool.AlertKeyEnabled, apipool.AlertBreakerClosed, apipool.AlertKeysBack:
		level = slog.LevelInfo
	}
	attrs := []slog.Attr{slog.String("kind", a.Kind.String()), slog.String("upstream", a.Pool)}
	if a.KeyID != "" {
		attrs = append(attrs, slog.String("key", a.KeyID))
	}
	if a.Client != "" {
		attrs = append(attrs, slog.String("client", a.Client))
	}
	if !a.Until.IsZero() {
		attrs = append(attrs, slog.Time("until", a.Until))
	}
	attrs = append(attrs, slog.String("reason", a.Reason))
	s.log.LogAttrs(context.Background(), level, "alert", attrs...)
	if s.hooks != nil {
		s.hooks.Send(a)
	}
}

// closeWebhooks delivers what the sender holds within ctx, after the
// pools have closed (and handed it their last alerts).
func (s *Server) closeWebhooks(ctx context.Context) error {
	if s.hooks == nil {
		return nil
	}
	err := s.hooks.Close(ctx)
	if st := s.hooks.Stats(); st.Failed > 0 || st.Dropped > 0 {
		s.log.Warn("webhooks not delivered", "failed", st.Failed, "dropped", st.Dropped, "delivered", st.Delivered)
	}
	for _, up := range s.upstreams {
		if d := up.pool.AlertStats().Dropped; d > 0 {
			s.log.Warn("alerts dropped: the pool's alert queue was full", "upstream", up.cfg.Name, "dropped", d)
		}
	}
	if err != nil {
		return fmt.Errorf("webhooks: %w", err)
	}
	return nil
}

// sameAlerts reports whether two alerts sections are the same (a change
// needs a restart).
func sameAlerts(a, b config.Alerts) bool {
	if a.CoolingThreshold != b.CoolingThreshold || a.NoKeyInterval != b.NoKeyInterval || len(a.Webhooks) != len(b.Webhooks) {
		return false
	}
	for i, x := range a.Webhooks {
		y := b.Webhooks[i]
		if x.Name != y.Name || x.URL.String() != y.URL.String() || !bytes.Equal(x.Secret, y.Secret) || !slices.Equal(x.Kinds, y.Kinds) ||
			x.Timeout != y.Timeout || x.MaxAttempts != y.MaxAttempts {
			return false
		}
	}
	return true
}
