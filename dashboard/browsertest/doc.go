// Package browsertest tests the dashboard in a real browser: headless
// Chromium (Debian's chromium package) driven through chromedp. It is a
// module of its own so that chromedp and the Chrome DevTools protocol
// bindings stay out of the library's module; it holds only tests.
//
//	cd dashboard/browsertest && go test -race -artifacts -outputdir=out ./...
//
// writes the page's screenshots under out/. TestThousandKeys logs the
// main thread's CPU time per refresh at 1,000 keys, from a Chromium
// trace (DASH_KEYS=n for another number of keys):
//
//	go test -race -count=1 -v -run TestThousandKeys ./... | grep main-thread
//
// Without Chromium the test
// skips, except when CI=true, where it fails. CHROMIUM names another
// binary than /usr/bin/chromium.
package browsertest
