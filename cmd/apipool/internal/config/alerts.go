package config

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/webhook"
)

// The alerts section: what the pools report (apipool.WithAlerts), and the
// webhooks that receive it (package webhook).

// Alerts is the alerts' settings. Every alert is logged; the webhooks
// receive those of their kinds.
type Alerts struct {
	CoolingThreshold time.Duration // 0: the library's default
	NoKeyInterval    time.Duration // 0: the library's default
	Webhooks         []Webhook
}

// Webhook is one receiver of alerts.
type Webhook struct {
	Name        string              // "" when the file gives none
	URL         *url.URL            // never shown in errors or logs but its host
	Secret      []byte              // the whsec_ secret, decoded
	Kinds       []apipool.AlertKind // none: every kind
	Timeout     time.Duration
	MaxAttempts int
}

type alertsT struct {
	CoolingThreshold Value[Duration] `yaml:"cooling_threshold"`
	NoKeyInterval    Value[Duration] `yaml:"no_key_interval"`
	Webhooks         []webhookT      `yaml:"webhooks"`
}

type webhookT struct {
	Line        int
	Name        Value[string]   `yaml:"name"`
	URL         Value[string]   `yaml:"url"`
	Secret      Value[string]   `yaml:"secret"`
	Kinds       []Value[string] `yaml:"kinds"`
	Timeout     Value[Duration] `yaml:"timeout"`
	MaxAttempts Value[int]      `yaml:"max_attempts"`
}

// The problems of a webhook URL, as webhookURL says them: never with the
// URL.
const (
	hookNotHTTP = "its scheme is not http or https"
	hookNoHost  = "it has no host"
	hookUser    = "it holds a user or a password (user:password@)"
	hookFrag    = "it has a fragment (#...)"
)

// webhookURL parses s as a receiver's URL, or says what is wrong with it.
// A query is allowed: some receivers take their token there.
func webhookURL(s string) (*url.URL, string) {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return nil, notURL
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, hookNotHTTP
	case u.Host == "":
		return nil, hookNoHost
	case u.User != nil:
		return nil, hookUser
	case u.Fragment != "":
		return nil, hookFrag
	}
	return u, ""
}

func alertKindNames() []string {
	var out []string
	for _, k := range apipool.AlertKinds() {
		out = append(out, k.String())
	}
	return out
}

func (v *validator) alerts(a *alertsT) Alerts {
	out := Alerts{CoolingThreshold: durOr(a.CoolingThreshold, 0), NoKeyInterval: durOr(a.NoKeyInterval, 0)}
	if x := a.CoolingThreshold; x.Set && x.V == 0 {
		v.fail(x.Line, "alerts.cooling_threshold", "want a duration above 0, such as 5m (leave it out for the default)")
	}
	if x := a.NoKeyInterval; x.Set && x.V == 0 {
		v.fail(x.Line, "alerts.no_key_interval", "want a duration above 0, such as 1m (leave it out for the default)")
	}
	names := map[string]int{}
	for i := range a.Webhooks {
		w := &a.Webhooks[i]
		at := fmt.Sprintf("alerts.webhooks[%d]", i)
		h := Webhook{Name: w.Name.V, Timeout: durOr(w.Timeout, webhook.DefaultTimeout), MaxAttempts: w.MaxAttempts.V}
		if w.Name.Set {
			if !validName(h.Name) {
				v.fail(w.Name.Line, at+".name", "want a name of letters, digits, '-', '_' or '.', got %s", shown(w.Name))
			} else if j, dup := names[h.Name]; dup {
				v.fail(w.Name.Line, at+".name", "%s names alerts.webhooks[%d] too", shown(w.Name), j)
			}
			names[h.Name] = i
		}
		if !w.URL.Set || w.URL.V == "" {
			v.fail(w.Line, at+".url", "missing: the receiver's URL, such as https://receiver.example/apipool")
		} else if u, problem := webhookURL(w.URL.V); problem != "" {
			v.fail(w.URL.Line, at+".url", "want an http or https URL with a host and no user or fragment: %s (the URL is not shown)", problem)
		} else {
			h.URL = u
		}
		switch {
		case !w.Secret.Set:
			v.fail(w.Line, at+".secret", "missing: the receiver's signing secret, whsec_ and base64, as ${VAR}")
		case !w.Secret.raw():
			v.fail(w.Secret.Line, at+".secret", "is a secret: write it as ${VAR}, not in the file")
		default:
			b, err := webhook.ParseSecret(w.Secret.V)
			if err != nil {
				v.fail(w.Secret.Line, at+".secret", "%s: %v", refs(w.Secret.Raw)[0], err)
			}
			h.Secret = b
		}
		for j, k := range w.Kinds {
			kind, err := apipool.ParseAlertKind(k.V)
			if err != nil {
				v.fail(k.Line, fmt.Sprintf("%s.kinds[%d]", at, j), "want one of %s, got %s%s", strings.Join(alertKindNames(), ", "), shown(k), didYouMean(k, alertKindNames()))
				continue
			}
			h.Kinds = append(h.Kinds, kind)
		}
		if w.Kinds != nil && len(w.Kinds) == 0 {
			v.fail(w.Line, at+".kinds", "an empty list would send nothing: leave kinds out for every kind, or remove the webhook")
		}
		if x := w.Timeout; x.Set && (x.V == 0 || time.Duration(x.V) > 5*time.Minute) {
			v.fail(x.Line, at+".timeout", "want a duration above 0 and at most 5m%s", fromVars(x))
		}
		if x := w.MaxAttempts; x.Set && (x.V < 1 || x.V > 100) {
			v.fail(x.Line, at+".max_attempts", "want 1 to 100")
		}
		out.Webhooks = append(out.Webhooks, h)
	}
	return out
}
