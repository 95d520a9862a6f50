package main

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/apipool-ng/apipool/examples/sdk/internal/demo"
)

// weatherAPI is an in-process server for api.yaml. Every request needs a
// known key in X-Api-Key (else 401). Each key may make quota[key] requests
// per window; beyond that the API answers 429 with Retry-After (seconds,
// to the end of the window) and an Error body, as api.yaml says.
type weatherAPI struct {
	quota  map[string]int // per key secret
	window time.Duration
	used   *demo.Window // requests in the current window, per key secret
}

func newWeatherAPI(quota map[string]int, window time.Duration) *weatherAPI {
	return &weatherAPI{quota: quota, window: window, used: demo.NewWindow(window)}
}

type city struct {
	ID, Name, Country string
	TempC             float64
	Conditions        string
}

var cities = []city{
	{"paris", "Paris", "FR", 14.5, "cloudy"},
	{"oslo", "Oslo", "NO", 3.0, "snow"},
	{"lima", "Lima", "PE", 19.0, "overcast"},
	{"osaka", "Osaka", "JP", 21.5, "sunny"},
}

func findCity(id string) (city, bool) {
	for _, c := range cities {
		if c.ID == id {
			return c, true
		}
	}
	return city{}, false
}

// handler serves the API under prefix ("/v1").
func (a *weatherAPI) handler(prefix string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+prefix+"/cities", func(w http.ResponseWriter, r *http.Request) {
		country := r.URL.Query().Get("country")
		out := []map[string]string{}
		for _, c := range cities {
			if country == "" || c.Country == country {
				out = append(out, map[string]string{"id": c.ID, "name": c.Name, "country": c.Country})
			}
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET "+prefix+"/cities/{cityId}/weather", func(w http.ResponseWriter, r *http.Request) {
		c, ok := findCity(r.PathValue("cityId"))
		if !ok {
			writeError(w, http.StatusNotFound, "not_found", "no such city")
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"cityId": c.ID, "temperatureC": c.TempC, "conditions": c.Conditions})
	})
	mux.HandleFunc("GET "+prefix+"/cities/{cityId}/forecast", func(w http.ResponseWriter, r *http.Request) {
		c, ok := findCity(r.PathValue("cityId"))
		if !ok {
			writeError(w, http.StatusNotFound, "not_found", "no such city")
			return
		}
		days := 3
		if s := r.URL.Query().Get("days"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > 7 {
				writeError(w, http.StatusBadRequest, "bad_request", "days must be 1 to 7")
				return
			}
			days = n
		}
		out := make([]map[string]any, days)
		for d := range days {
			out[d] = map[string]any{"day": d + 1, "minC": c.TempC - 4 + float64(d), "maxC": c.TempC + 3 + float64(d), "conditions": c.Conditions}
		}
		writeJSON(w, http.StatusOK, out)
	})
	return a.limit(mux)
}

// limit enforces the API key and its quota before the operation runs.
func (a *weatherAPI) limit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("X-Api-Key")
		quota, known := a.quota[key]
		if !known {
			writeError(w, http.StatusUnauthorized, "invalid_key", "missing or unknown API key")
			return
		}
		if left, over := a.used.Take(key, quota); over {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(left.Seconds()))))
			writeError(w, http.StatusTooManyRequests, "rate_limited", "quota of "+strconv.Itoa(quota)+" requests per "+a.window.String()+" used up")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, kind, msg string) {
	writeJSON(w, code, map[string]string{"code": kind, "message": msg})
}
