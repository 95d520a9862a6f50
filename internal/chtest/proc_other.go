//go:build !linux

package chtest

import (
	"errors"
	"os"
)

// ownerGone reports false: without Pdeathsig a server may outlive its
// test process, so directories are never swept.
func ownerGone(pid int) bool { return false }

// Pause and Resume need SIGSTOP and SIGCONT: they fail here.
var sigStop, sigCont os.Signal

func findPID(arg string) (int, error) { return 0, errors.New("chtest: cannot find processes here") }
