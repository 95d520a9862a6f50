package apipool

import "github.com/apipool-ng/apipool/recorder"

// defaultRecorder is the store a pool records into when given none.
func defaultRecorder() (recorder.Recorder, recorder.Stats) {
	return recorder.Nop{}, nil // TODO: the in-memory store
}
