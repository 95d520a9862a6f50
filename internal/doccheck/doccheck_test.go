package doccheck

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// checked are the Markdown files whose Go blocks must compile, relative
// to the module's root (patterns of filepath.Glob).
var checked = []string{
	"README.md",
	"cmd/apipool/README.md",
	"docs/*.md",
	"recorder/clickhouse/README.md",
}

// unlabelledOK are the checked files whose fences may omit their language.
var unlabelledOK = map[string]bool{
	"recorder/clickhouse/README.md": true,
}

const modulePath = "github.com/apipool-ng/apipool"

func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil || !strings.Contains(string(data), "module "+modulePath+"\n") {
		t.Fatalf("module root %s: no go.mod of %s (%v)", root, modulePath, err)
	}
	return root
}

func goTool(t *testing.T) string {
	t.Helper()
	// go test puts its own GOROOT/bin first in the PATH.
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no go command")
	}
	t.Skip("no go command to compile the docs' blocks with")
	return ""
}

// TestDocsCompile compiles every ```go block of the checked files: see the
// package documentation for how fragments are completed.
func TestDocsCompile(t *testing.T) {
	root := moduleRoot(t)
	var files []string
	for _, pattern := range checked {
		m, err := filepath.Glob(filepath.Join(root, pattern))
		if err != nil || len(m) == 0 {
			t.Fatalf("%s: no file (%v)", pattern, err)
		}
		files = append(files, m...)
	}

	tmp := t.TempDir()
	overlay := map[string]string{}
	var pkgs []string
	total := 0
	for _, file := range files {
		rel, _ := filepath.Rel(root, file)
		rel = filepath.ToSlash(rel)
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		count := 0
		for _, b := range Extract(rel, data) {
			if b.Lang == "" && !unlabelledOK[rel] {
				t.Errorf("%s:%d: a fence without a language: fence Go as ```go and the rest as ```text, ```sh...", rel, b.Line-1)
			}
			if b.Lang != "go" {
				continue
			}
			count++
			total++
			name := fmt.Sprintf("b%03d", total)
			src, err := Generate(b, "docblock", file)
			if err != nil {
				t.Error(err)
			}
			if src == "" {
				continue
			}
			gen := filepath.Join(tmp, name+".go")
			if err := os.WriteFile(gen, []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(root, "internal", "doccheck", "blocks", name)
			overlay[filepath.Join(dir, "block.go")] = gen
			pkgs = append(pkgs, modulePath+"/internal/doccheck/blocks/"+name)
		}
		t.Logf("%s: %d Go blocks", rel, count)
	}
	if total == 0 {
		t.Fatal("no Go block found: is the extraction broken?")
	}

	ov, err := json.Marshal(map[string]any{"Replace": overlay})
	if err != nil {
		t.Fatal(err)
	}
	ovFile := filepath.Join(tmp, "overlay.json")
	if err := os.WriteFile(ovFile, ov, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(goTool(t), append([]string{"build", "-overlay=" + ovFile}, pkgs...)...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("the docs' Go blocks do not compile (%v):\n%s", err, out)
	}
}

// gone are the names the docs may mention although the code no longer has
// them: the README's "Changed API" names what was removed.
var gone = map[string]bool{
	"dashboard.ErrInvalidOption": true,
	"sql.ErrBadConfig":           true,
	"clickhouse.ErrBadConfig":    true,
}

// TestDocsNamesExist checks that every `pkg.Name` (or `pkg.Type.Member`)
// in the inline code of the checked files, for the module's packages
// (Packages), and every `pool.Method`, names something the code declares.
func TestDocsNamesExist(t *testing.T) {
	root := moduleRoot(t)
	exported := map[string]map[string]bool{}
	names := func(pkg string) map[string]bool {
		if pkg == "pool" {
			pkg = "apipool"
		}
		if exported[pkg] == nil {
			n, err := Exported(filepath.Join(root, Packages[pkg]))
			if err != nil {
				t.Fatal(err)
			}
			exported[pkg] = n
		}
		return exported[pkg]
	}
	count := 0
	for _, pattern := range checked {
		files, _ := filepath.Glob(filepath.Join(root, pattern))
		for _, file := range files {
			rel, _ := filepath.Rel(root, file)
			rel = filepath.ToSlash(rel)
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range InlineRefs(rel, data) {
				count++
				if gone[r.Pkg+"."+r.Name] {
					continue
				}
				n := names(r.Pkg)
				var ok bool
				switch {
				case r.Pkg == "pool":
					ok = n["Transport."+r.Name]
				case r.Member != "":
					ok = n[r.Name] && n[r.Name+"."+r.Member]
				default:
					ok = n[r.Name]
				}
				if !ok {
					t.Errorf("%s:%d: `%s`: the code declares no such name", r.File, r.Line, r)
				}
			}
		}
	}
	t.Logf("%d references checked", count)
}
