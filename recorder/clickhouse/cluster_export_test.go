package clickhouse

// ResendMode returns how the store makes a resend harmless ("identical"
// or "check"), once its schema is set up; "" before.
func ResendMode(s *Store) string {
	st := s.state.Load()
	if st == nil {
		return ""
	}
	return st.dedup.mode.String()
}
