package apipool

import (
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/recorder/memory"
)

// defaultRecorder is the store a pool records into when given none: the
// in-memory store, which also answers Stats.
func defaultRecorder() (recorder.Recorder, recorder.Stats) {
	m := memory.New()
	return m, m
}
