package doccheck

import (
	"fmt"
	"strings"
	"testing"
)

func TestExtract(t *testing.T) {
	md := "# t\n\n```go\na := 1\n```\n\n- item:\n\n  ```sh\n  echo hi\n  ```\n\n~~~text\nout\n~~~\n\n```\nbare\n```\n"
	got := Extract("x.md", []byte(md))
	want := []Block{
		{File: "x.md", Line: 4, Lang: "go", Src: "a := 1\n"},
		{File: "x.md", Line: 10, Lang: "sh", Src: "echo hi\n"},
		{File: "x.md", Line: 14, Lang: "text", Src: "out\n"},
		{File: "x.md", Line: 18, Lang: "", Src: "bare\n"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d blocks %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("block %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

func generate(t *testing.T, src string) (string, error) {
	t.Helper()
	return Generate(Block{File: "x.md", Line: 10, Lang: "go", Src: src}, "docblock", "/abs/x.md")
}

func TestGenerateForms(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      []string // substrings of the generated file
		not       []string
	}{
		{
			name: "whole file",
			src:  "package main\n\nfunc main() {}\n",
			want: []string{"//line /abs/x.md:10\npackage main\n"},
			not:  []string{"docblock"},
		},
		{
			name: "declarations",
			src:  "func f() *http.Client { return nil }\n",
			want: []string{"package docblock", `http "net/http"`, "//line /abs/x.md:10\nfunc f()"},
		},
		{
			name: "statements",
			src:  "pool, err := apipool.New(keys)\nif err != nil {\n\treturn err\n}\nresp, err := client.Get(\"u\")\n",
			want: []string{
				`apipool "github.com/apipool-ng/apipool"`, `http "net/http"`,
				"func _(client *http.Client, keys []apipool.Key) error {\n//line /abs/x.md:10\npool, err :=",
				"\t_ = err\n", "\t_ = pool\n", "\t_ = resp\n", "\treturn nil\n}",
			},
		},
		{
			name: "statements after imports",
			src:  "import (\n\t\"github.com/apipool-ng/apipool\"\n)\n\np, err := apipool.New(nil)\nreturn err\n",
			want: []string{"//line /abs/x.md:10\nimport (", "func _() error {\n//line /abs/x.md:12\n"},
			not:  []string{"return nil"},
		},
		{
			name: "own imports are not completed",
			src:  "import \"fmt\"\n\nfmt.Println(time.Now())\n",
			not:  []string{`"time"`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := generate(t, tc.src)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("no %q in\n%s", w, got)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(got, w) {
					t.Errorf("%q in\n%s", w, got)
				}
			}
		})
	}
}

func TestGenerateDroppedErr(t *testing.T) {
	_, err := generate(t, "store, err := open()\npool, err := apipool.New(keys, store)\n_ = pool\n")
	if err == nil || !strings.Contains(err.Error(), "x.md:10: the err assigned here is overwritten at line 11") {
		t.Errorf("dropped err: got %v", err)
	}
	for _, ok := range []string{
		"store, err := open()\nif err != nil {\n\treturn err\n}\npool, err := apipool.New(keys, store)\n",
		"store, err := open()\nlog.Print(err)\n",
		"a, err := f()\nb, err := g(a, err)\n",
	} {
		if _, err := generate(t, ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
}

func TestInlineRefs(t *testing.T) {
	md := "Use `apipool.WithHosts(\"x\")` and `sql.Config.Clock`, `errors.Is(err,\n  apipool.ErrClosed)`, `pool.Stats()`.\n\n```go\napipool.Ignored()\n```\n\nNot `fmt.Println` nor `x.apipool.Y`; ```` ```go ```` then `` `status.Success` ``.\n"
	var got []string
	for _, r := range InlineRefs("x.md", []byte(md)) {
		got = append(got, fmt.Sprintf("%d:%s", r.Line, r))
	}
	want := "1:apipool.WithHosts 1:sql.Config.Clock 2:apipool.ErrClosed 2:pool.Stats 8:status.Success"
	if strings.Join(got, " ") != want {
		t.Errorf("got %q, want %q", strings.Join(got, " "), want)
	}
}
