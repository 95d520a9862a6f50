package clickhouse

import "time"

// Pipelined returns how many batches s's writer built while the batch
// before was being sent.
func Pipelined(s *Store) uint64 { return s.w.pipelined.Load() }

// Checks returns how many batches s's writer found already written when
// it checked before a resend.
func Checks(s *Store) uint64 { return s.w.checks.Load() }

// RecoveredAt returns when s's writer last wrote a batch after failures
// (zero when it never recovered).
func RecoveredAt(s *Store) time.Time {
	if n := s.w.recoveredAt.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

func Batches(s *Store) uint64 { return s.w.batches.Load() }

// Orphans returns how many parts s found that a server kept though
// ZooKeeper lacks them, before resending their batches.
func Orphans(s *Store) uint64 { return s.orphans.Load() }
