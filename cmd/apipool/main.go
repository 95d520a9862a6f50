// Command apipool is a key-pooling reverse proxy for HTTP APIs, for callers
// in any language, with subcommands to check keys and report usage.
//
//	go install github.com/apipool-ng/apipool/cmd/apipool@latest
//	apipool version
//	apipool serve -config apipool.yaml
//
// See cmd/apipool/README.md for the configuration file.
package main

import (
	"context"
	"os"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/proxy"
)

func main() {
	os.Exit(proxy.Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
