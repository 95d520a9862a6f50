package clickhouse

// Pipelined returns how many batches s's writer built while the batch
// before was being sent.
func Pipelined(s *Store) uint64 { return s.w.pipelined.Load() }
