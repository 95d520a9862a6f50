package test

import (
	"os/exec"
	"syscall"
)

// dieWithTest makes cmd get SIGKILL when the test process dies (a test
// binary ended by -timeout runs no cleanup), so that a long build does not
// outlive it.
func dieWithTest(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
