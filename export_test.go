package apipool

// SessionsHeld returns how many sessions t remembers (WithSessions).
func SessionsHeld(t *Transport) int {
	if t.sessions == nil {
		return 0
	}
	return t.sessions.len()
}
