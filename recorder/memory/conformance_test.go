package memory_test

import (
	"testing"
	"time"

	"github.com/apipool-ng/apipool/recorder/memory"
	"github.com/apipool-ng/apipool/recorder/recordertest"
)

func TestConformance(t *testing.T) {
	recordertest.Run(t, func(t *testing.T) recordertest.Store {
		s, err := memory.New()
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestConformanceRecentBase(t *testing.T) {
	// Events ending just before now, under the default clock check.
	base := time.Now().Truncate(time.Hour).Add(-4 * time.Hour)
	recordertest.RunBase(t, base, func(t *testing.T) recordertest.Store {
		s, err := memory.New(memory.WithRetention(6 * time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
