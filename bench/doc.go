// Package bench holds side-by-side benchmarks of apipool against a bare
// transport, github.com/hashicorp/go-retryablehttp and
// github.com/failsafe-go/failsafe-go's failsafehttp. It is a module of its
// own so that the comparison libraries never reach the builds of apipool's
// users. The benchmarks are in the _test.go files; README.md keeps the
// latest figures and the command that produced them.
package bench
