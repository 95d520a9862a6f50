//go:build !unix

package usage

func cpuNanos() int64 { return -1 }
