package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/apipool-ng/apipool"
)

// MaxKeyFileSize bounds a key file.
const MaxKeyFileSize = 16 << 20

type keyErr struct {
	file bool
	msg  string
}

// loadKeys reads an upstream's keys from the environment variable env (a
// valid name, or "") and the file (unset, or a path). Each line (or, in
// the variable, each comma-separated item) is a secret alone, or an ID and
// a secret separated by spaces; a key file's line may end with routing
// options (tier=N models=a,b*, see keyOptions), which it returns by ID;
// blank lines and lines starting with # are skipped. A key's ID is "upstream/ID", or "upstream/" and the first 8 hex
// digits of the secret's fingerprint when the line gives none. Errors name
// lines, never secrets, nor a file name that came from a variable or
// could be a key written in the wrong place.
//
// file is fileV's path resolved against the config file's directory: the
// errors show it.
func loadKeys(upstream, env string, fileV Value[string], file string, lookup func(string) (string, bool), lim KeyLimits) ([]apipool.Key, []keyErr, map[string]keyOpts) {
	label := keyFileLabel(fileV, file, true)
	var keys []apipool.Key
	var errs []keyErr
	ids := map[string]string{}
	secrets := map[string]string{}
	opts := map[string]keyOpts{} // by ID without the upstream's prefix
	add := func(fromFile bool, where, line string) {
		fields, o, problem := keyOptions(strings.Fields(line)) // routing.go
		switch {
		case problem != "":
			errs = append(errs, keyErr{fromFile, where + ": " + problem})
			return
		case !fromFile && (o.tier || o.weight || o.models):
			errs = append(errs, keyErr{fromFile, where + ": tier=, weight= and models= are key file options: give a variable's keys their tier, weight and models in key_tiers, key_weights and key_models"})
			return
		}
		var id, secret string
		switch len(fields) {
		case 1:
			secret = fields[0]
			id = apipool.Fingerprint(nil, apipool.Secret(secret))[:8]
		case 2:
			id, secret = fields[0], fields[1]
			if !validName(id) {
				errs = append(errs, keyErr{fromFile, where + ": the key ID is not a name of letters, digits, '-', '_' or '.'"})
				return
			}
			if looksLikeKey(id) {
				// An ID shows in logs, stats and the dashboard.
				errs = append(errs, keyErr{fromFile, where + ": the key ID looks like a secret: write the ID first, then the secret"})
				return
			}
		default:
			errs = append(errs, keyErr{fromFile, where + ": want a secret, or an ID and a secret, separated by spaces (then, in a key file, options: tier=N weight=N models=a,b*)"})
			return
		}
		opts[id] = o
		id = upstream + "/" + id
		if other, dup := secrets[secret]; dup {
			errs = append(errs, keyErr{fromFile, where + ": the same secret as " + other})
			return
		}
		if other, dup := ids[id]; dup {
			errs = append(errs, keyErr{fromFile, where + ": the same key ID as " + other})
			return
		}
		ids[id], secrets[secret] = where, where
		keys = append(keys, apipool.Key{ID: id, Secret: apipool.Secret(secret), PerSecond: lim.PerSecond, PerMinute: lim.PerMinute, PerDay: lim.PerDay, MaxInFlight: lim.MaxInFlight,
			Tier: o.Tier, Weight: o.Weight, Models: o.Models})
	}
	if env != "" {
		val, ok := lookup(env)
		if !ok {
			errs = append(errs, keyErr{false, varRef(env) + " is not set"})
		}
		n := 0
		for _, item := range strings.FieldsFunc(val, func(r rune) bool { return r == ',' || r == '\n' }) {
			n++
			item = strings.TrimSpace(item)
			if item == "" || strings.HasPrefix(item, "#") {
				continue
			}
			add(false, fmt.Sprintf("%s item %d", shownName(env), n), item)
		}
	}
	if file != "" {
		data, err := ReadKeyFile(file)
		var oe *openError
		if errors.As(err, &oe) {
			label = keyFileLabel(fileV, file, false)
		}
		if err != nil {
			errs = append(errs, keyErr{true, label + ": " + err.Error()})
		}
		for i, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			add(true, fmt.Sprintf("%s line %d", label, i+1), line)
		}
	}
	if env == "" && file == "" {
		errs = append(errs, keyErr{false, "no keys: give env (a variable holding the keys) or file (a key file), or both"})
	} else if len(keys) == 0 && len(errs) == 0 {
		errs = append(errs, keyErr{file != "", "no keys found"})
	}
	return keys, errs, opts
}

// keyFileLabel names a key file in errors: "key file PATH", PATH being
// the path resolved (file), unless the path came from a variable, or
// could be a key given as a path: a file that could not be opened
// (!exists) whose name looks like a key.
func keyFileLabel(x Value[string], file string, exists bool) string {
	if r := refs(x.Raw); len(r) > 0 {
		return "the key file named by " + strings.Join(r, ", ")
	}
	if !exists && !safeToShow(x.V) {
		return "the key file (its name is not shown: it looks like a secret, not a path)"
	}
	return "key file " + file
}

// ReadKeyFile reads a key file, refusing one that users other than its
// owner and group may read or write, or that is not a regular file. Its
// errors do not name the file: the caller does.
func ReadKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, &openError{pe.Err}
		}
		return nil, &openError{errors.New("cannot open it")}
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, errors.New("cannot stat it")
	}
	if !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	if perm := st.Mode().Perm(); perm&0o007 != 0 {
		return nil, fmt.Errorf("open to other users (mode %04o): run chmod o-rwx on it (600 or 640)", perm)
	}
	if st.Size() > MaxKeyFileSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxKeyFileSize)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxKeyFileSize))
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, pe.Err
		}
		return nil, errors.New("cannot read it")
	}
	return b, nil
}

// openError is ReadKeyFile's error when the file cannot be opened.
type openError struct{ err error }

func (e *openError) Error() string { return e.err.Error() }
func (e *openError) Unwrap() error { return e.err }
