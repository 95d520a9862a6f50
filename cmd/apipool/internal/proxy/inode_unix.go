//go:build unix

package proxy

import (
	"io/fs"
	"syscall"
)

func inode(st fs.FileInfo) any {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Ino
	}
	return nil
}
