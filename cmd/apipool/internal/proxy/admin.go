package proxy

// The admin API (issue 27): served when admin.users is set, under
// AdminAPIPath, on the admin listener (or on the main listener's admin
// paths when admin.listen is not set), behind the admin users' basic auth.
//
//	GET    /admin/api/v1/upstreams/{name}/keys               the keys and their state
//	POST   /admin/api/v1/upstreams/{name}/keys               add {"id": "...", "secret": "...", "tier": 0, "models": [...]} (tier and models optional)
//	DELETE /admin/api/v1/upstreams/{name}/keys/{id}          remove
//	POST   /admin/api/v1/upstreams/{name}/keys/{id}/disable  disable {"reason": "..."} (optional)
//	POST   /admin/api/v1/upstreams/{name}/keys/{id}/enable   enable
//	POST   /admin/api/v1/upstreams/{name}/probe              probe every key
//
// {id} is the key's ID without the "name/" prefix the pool gives it.
// Every call but GET must say Content-Type: application/json (a cross-site
// form cannot), and every call is logged: user, method, route, upstream,
// key ID and status, never a secret nor a path as sent.
//
// A reload makes the pool's membership match the key file again (keys
// added here and not in the file go, keys removed here and in the file
// come back), while the disabled or enabled state of a key the reload
// keeps (same ID, same secret, same limits, tier and models) stays.

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
)

// AdminAPIPath is where the admin API is mounted.
const AdminAPIPath = "/admin/api/v1/"

// adminCall is what the log line of an admin call says; the handlers fill
// it in as they learn it.
type adminCall struct {
	user, route, upstream, key string
}

type adminCallKey struct{}

func callOf(r *http.Request) *adminCall {
	c, _ := r.Context().Value(adminCallKey{}).(*adminCall)
	if c == nil {
		c = &adminCall{}
	}
	return c
}

// adminAPI returns the admin API's handler.
func (s *Server) adminAPI(users []config.User) http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, h http.HandlerFunc) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			callOf(r).route = r.Pattern // logged: the pattern, not the path as sent
			h(w, r)
		})
	}
	const p = "/admin/api/v1/upstreams/{name}"
	handle("GET "+p+"/keys", s.adminList)
	handle("POST "+p+"/keys", s.adminAdd)
	handle("DELETE "+p+"/keys/{id}", s.adminRemove)
	handle("POST "+p+"/keys/{id}/disable", s.adminDisable)
	handle("POST "+p+"/keys/{id}/enable", s.adminEnable)
	handle("POST "+p+"/probe", s.adminProbe)
	handle(AdminAPIPath, func(w http.ResponseWriter, r *http.Request) {
		adminError(w, r, http.StatusNotFound, "not_found", "no such admin API call (see the README's Admin API section)")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		call := &adminCall{}
		sw := &adminWriter{ResponseWriter: w}
		defer func() {
			code := sw.code
			if code == 0 {
				code = http.StatusOK
			}
			route := call.route
			if route == "" {
				route = AdminAPIPath
			}
			s.log.Info("admin", "user", call.user, "method", r.Method, "route", route, "upstream", call.upstream,
				"key", call.key, "status", code, "duration", time.Since(start))
		}()
		r = r.WithContext(context.WithValue(r.Context(), adminCallKey{}, call))
		user, ok := adminUser(users, r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Basic realm="apipool admin", charset="UTF-8"`)
			adminError(sw, r, http.StatusUnauthorized, "unauthorized", "an admin user's name and password are required (basic auth)")
			return
		}
		call.user = user
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if err != nil || mt != "application/json" {
				adminError(sw, r, http.StatusUnsupportedMediaType, "invalid_request", "state-changing admin calls need Content-Type: application/json (forms are refused)")
				return
			}
		}
		mux.ServeHTTP(sw, r)
	})
}

// adminUser returns the basic-auth user when its password is right,
// comparing with every configured user in constant time.
func adminUser(users []config.User, r *http.Request) (string, bool) {
	name, pass, ok := r.BasicAuth()
	if !ok {
		return "", false
	}
	sum := sha256.Sum256([]byte(pass))
	good := 0
	for _, u := range users {
		nameOK := subtle.ConstantTimeCompare([]byte(name), []byte(u.Name))
		passOK := subtle.ConstantTimeCompare(sum[:], u.Hash[:])
		good |= nameOK & passOK
	}
	if good != 1 {
		return "", false
	}
	return name, true
}

// adminWriter notes the status.
type adminWriter struct {
	http.ResponseWriter
	code int
}

func (w *adminWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *adminWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// adminError answers with the proxy's error shape and X-Apipool-Error.
func adminError(w http.ResponseWriter, r *http.Request, code int, typ, msg string) {
	w.Header().Set("Cache-Control", "no-store")
	writeError(w, code, typ, msg)
}

func adminJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// adminUpstream returns the upstream the path names, or answers 404.
func (s *Server) adminUpstream(w http.ResponseWriter, r *http.Request) *upstream {
	up := s.byName[r.PathValue("name")]
	if up == nil {
		adminError(w, r, http.StatusNotFound, "not_found", "no such upstream")
		return nil
	}
	callOf(r).upstream = up.cfg.Name
	return up
}

// adminKey returns the upstream and the pool ID of the key the path
// names, or answers 404. An ID that names no key is not logged.
func (s *Server) adminKey(w http.ResponseWriter, r *http.Request) (*upstream, string) {
	up := s.adminUpstream(w, r)
	if up == nil {
		return nil, ""
	}
	id := up.cfg.Name + "/" + r.PathValue("id")
	up.mu.Lock()
	_, ok := up.keys[id]
	up.mu.Unlock()
	if !ok {
		adminError(w, r, http.StatusNotFound, "not_found", "no such key in this upstream's pool")
		return nil, ""
	}
	callOf(r).key = id
	return up, id
}

// keyJSON is a key as the admin API shows it: its state, never its secret.
type keyJSON struct {
	ID              string     `json:"id"`
	Fingerprint     string     `json:"fingerprint"`
	State           string     `json:"state"`
	Hold            string     `json:"hold,omitempty"`
	HoldUntil       *time.Time `json:"hold_until,omitempty"`
	CoolingUntil    *time.Time `json:"cooling_until,omitempty"`
	CoolingReason   string     `json:"cooling_reason,omitempty"`
	Disabled        bool       `json:"disabled"`
	DisabledReason  string     `json:"disabled_reason,omitempty"`
	DisabledAt      *time.Time `json:"disabled_at,omitempty"`
	DisabledRetryAt *time.Time `json:"disabled_retry_at,omitempty"`
	InFlight        int64      `json:"in_flight"`
	QuotaLeft       int64      `json:"quota_left"`
	LearnedLimit    int        `json:"learned_limit"`
	LearnedWindow   string     `json:"learned_window,omitempty"`
	InKeyFile       bool       `json:"in_key_file"`

	// Routing (issue 25): the key's tier and weight (strategy: weighted);
	// the models it serves (absent: every model); the models it rests for
	// (routing.cooldown_scope: model).
	Tier           int                 `json:"tier"`
	Weight         int                 `json:"weight"`
	Models         []string            `json:"models,omitempty"`
	ModelCooldowns []modelCooldownJSON `json:"model_cooldowns,omitempty"`
}

type modelCooldownJSON struct {
	Model string    `json:"model"`
	Until time.Time `json:"until"`
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (s *Server) adminList(w http.ResponseWriter, r *http.Request) {
	up := s.adminUpstream(w, r)
	if up == nil {
		return
	}
	adminJSON(w, http.StatusOK, map[string]any{"upstream": up.cfg.Name, "keys": up.keyList("")})
}

// keyList returns the pool's keys (only id's when id is not "").
func (up *upstream) keyList(id string) []keyJSON {
	up.mu.Lock()
	inFile := up.fileKeys
	up.mu.Unlock()
	out := []keyJSON{}
	for _, k := range up.pool.Snapshot() {
		if id != "" && k.KeyID != id {
			continue
		}
		j := keyJSON{ID: k.KeyID, Fingerprint: k.Fingerprint, State: string(k.State), Hold: k.Reason, HoldUntil: timeOrNil(k.Until),
			CoolingUntil: timeOrNil(k.CoolingUntil), CoolingReason: k.CoolingReason,
			Disabled: k.Disabled, DisabledReason: k.DisabledReason, DisabledAt: timeOrNil(k.DisabledAt), DisabledRetryAt: timeOrNil(k.DisabledRetryAt),
			InFlight: k.InFlight, QuotaLeft: k.QuotaLeft, LearnedLimit: k.LearnedLimit, InKeyFile: inFile[k.KeyID]}
		if k.LearnedWindow > 0 {
			j.LearnedWindow = k.LearnedWindow.String()
		}
		j.Tier, j.Weight, j.Models = k.Tier, k.Weight, k.Models
		for _, mc := range k.ModelCooldowns {
			j.ModelCooldowns = append(j.ModelCooldowns, modelCooldownJSON{mc.Model, mc.Until})
		}
		out = append(out, j)
	}
	return out
}

// readJSON decodes a small JSON object into v; its errors never quote the
// body (a secret could be in it).
func readJSON(w http.ResponseWriter, r *http.Request, v any, optional bool) bool {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err == nil && optional && len(strings.TrimSpace(string(b))) == 0 {
		return true
	}
	if err == nil {
		d := json.NewDecoder(strings.NewReader(string(b)))
		d.DisallowUnknownFields()
		err = d.Decode(v)
		if err == nil && d.More() {
			err = errors.New("trailing data")
		}
	}
	if err != nil {
		adminError(w, r, http.StatusBadRequest, "invalid_request", "the body is not the JSON object this call takes (at most 64 KiB; see the README)")
		return false
	}
	return true
}

func (s *Server) adminAdd(w http.ResponseWriter, r *http.Request) {
	up := s.adminUpstream(w, r)
	if up == nil {
		return
	}
	var body struct {
		ID     string   `json:"id"`
		Secret string   `json:"secret"`
		Tier   int      `json:"tier"`
		Weight int      `json:"weight"`
		Models []string `json:"models"`
	}
	if !readJSON(w, r, &body, false) {
		return
	}
	if err := config.CheckKey(body.ID, body.Secret); err != nil {
		adminError(w, r, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if body.Tier < 0 || body.Tier > config.MaxTier {
		adminError(w, r, http.StatusBadRequest, "invalid_request", "want a tier from 0 (the first) to "+strconv.Itoa(config.MaxTier))
		return
	}
	switch {
	case body.Weight < 0 || body.Weight > config.MaxWeight:
		adminError(w, r, http.StatusBadRequest, "invalid_request", "want a weight from 1 to "+strconv.Itoa(config.MaxWeight))
		return
	case body.Weight > 0 && up.cfg.Strategy != apipool.Weighted:
		adminError(w, r, http.StatusBadRequest, "invalid_request", "this upstream's strategy is not weighted: a key's weight would not be read")
		return
	}
	if err := config.CheckModels(body.Models); err != nil {
		adminError(w, r, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if len(body.Models) > 0 && up.cfg.Routing.Model == "" {
		adminError(w, r, http.StatusBadRequest, "invalid_request", "this upstream has no routing.model: a key's models would match no request")
		return
	}
	// Serialised with Reload, whose scrub index would forget the key.
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	up.mu.Lock()
	lim := up.keyLimits
	k := apipool.Key{ID: up.cfg.Name + "/" + body.ID, Secret: apipool.Secret(body.Secret),
		PerSecond: lim.PerSecond, PerMinute: lim.PerMinute, PerDay: lim.PerDay, MaxInFlight: lim.MaxInFlight, Budget: up.keyBudgets,
		Tier: body.Tier, Weight: body.Weight, Models: body.Models}
	_, dupID := up.keys[k.ID]
	dupSecret := false
	for _, sec := range up.keys {
		dupSecret = dupSecret || sec == k.Secret
	}
	up.mu.Unlock()
	switch {
	case dupID:
		adminError(w, r, http.StatusConflict, "conflict", "a key with this ID is in the pool")
		return
	case dupSecret:
		adminError(w, r, http.StatusConflict, "conflict", "this secret is in the pool already, under another ID")
		return
	}
	callOf(r).key = k.ID
	// The secret is scrubbed from the first answer that may use it.
	s.updateScrub([]apipool.Key{k})
	up.mu.Lock()
	err := up.pool.AddKey(k)
	if err == nil {
		up.keys[k.ID] = k.Secret
	}
	up.mu.Unlock()
	s.updateScrub(nil)
	if err != nil {
		adminError(w, r, http.StatusBadRequest, "invalid_request", "the pool refused the key: "+strings.ReplaceAll(err.Error(), body.Secret, "[secret]"))
		return
	}
	adminJSON(w, http.StatusCreated, map[string]any{"upstream": up.cfg.Name, "keys": up.keyList(k.ID)})
}

func (s *Server) adminRemove(w http.ResponseWriter, r *http.Request) {
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	up, id := s.adminKey(w, r)
	if up == nil {
		return
	}
	up.mu.Lock()
	if len(up.keys) == 1 {
		up.mu.Unlock()
		adminError(w, r, http.StatusConflict, "conflict", "this is the pool's last key: add another first, or disable it")
		return
	}
	sec := up.keys[id]
	err := up.pool.RemoveKey(id)
	if err == nil {
		// A request in flight may still use it: answers are scrubbed of
		// it for a while yet.
		up.retired = append(up.retired, retiredSecret{sec, time.Now().Add(up.cfg.Timeout + time.Minute)})
		delete(up.keys, id)
	}
	up.mu.Unlock()
	s.updateScrub(nil)
	if err != nil {
		adminError(w, r, http.StatusInternalServerError, "internal_error", "the pool could not remove the key")
		return
	}
	adminJSON(w, http.StatusOK, map[string]any{"upstream": up.cfg.Name, "removed": id})
}

func (s *Server) adminDisable(w http.ResponseWriter, r *http.Request) {
	up, id := s.adminKey(w, r)
	if up == nil {
		return
	}
	var body struct {
		Reason string `json:"reason"`
	}
	if !readJSON(w, r, &body, true) {
		return
	}
	if len(body.Reason) > 200 {
		adminError(w, r, http.StatusBadRequest, "invalid_request", "the reason is longer than 200 bytes")
		return
	}
	reason := "disabled by admin " + callOf(r).user
	if body.Reason != "" {
		// Shown by the list and the dashboard: scrubbed of pool secrets.
		sr, _ := s.scrub.Load().scrubString(body.Reason)
		reason += ": " + sr
	}
	if err := up.pool.Disable(id, reason); err != nil {
		adminError(w, r, http.StatusNotFound, "not_found", "no such key in this upstream's pool")
		return
	}
	adminJSON(w, http.StatusOK, map[string]any{"upstream": up.cfg.Name, "keys": up.keyList(id)})
}

func (s *Server) adminEnable(w http.ResponseWriter, r *http.Request) {
	up, id := s.adminKey(w, r)
	if up == nil {
		return
	}
	if err := up.pool.Enable(id); err != nil {
		adminError(w, r, http.StatusNotFound, "not_found", "no such key in this upstream's pool")
		return
	}
	adminJSON(w, http.StatusOK, map[string]any{"upstream": up.cfg.Name, "keys": up.keyList(id)})
}

func (s *Server) adminProbe(w http.ResponseWriter, r *http.Request) {
	up := s.adminUpstream(w, r)
	if up == nil {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), up.cfg.Timeout)
	defer cancel()
	res, err := up.pool.CheckUsable(ctx)
	if errors.Is(err, apipool.ErrNoProbe) {
		adminError(w, r, http.StatusConflict, "no_probe", "this upstream has no probe (upstreams[].probe)")
		return
	}
	if err != nil {
		adminError(w, r, http.StatusBadGateway, "upstream_error", "the probe failed")
		return
	}
	type probeJSON struct {
		KeyID  string `json:"key_id"`
		Usable bool   `json:"usable"`
		Status string `json:"status"`
		Error  string `json:"error,omitempty"`
	}
	out := make([]probeJSON, len(res))
	idx := s.scrub.Load()
	for i, p := range res {
		out[i] = probeJSON{KeyID: p.KeyID, Usable: p.Usable, Status: p.Status.String()}
		if p.Err != nil {
			out[i].Error, _ = idx.scrubString(p.Err.Error()) // the pool removes the key's secret; this, any other's
		}
	}
	adminJSON(w, http.StatusOK, map[string]any{"upstream": up.cfg.Name, "probes": out})
}
