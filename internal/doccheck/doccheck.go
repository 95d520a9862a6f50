// Package doccheck compiles the Go blocks of the repository's Markdown, so
// that a snippet that stops compiling fails the tests (TestDocsCompile).
// The files checked are listed in the test (checked): README.md,
// cmd/apipool/README.md, docs/*.md and recorder/clickhouse/README.md.
//
// Every block fenced as ```go is compiled with the Go compiler (go build,
// with an -overlay, so nothing is written to the tree) as a package of its
// own, inside the main module, with the module's go.mod. A block that is not
// meant to compile (output, pseudo-code, a shell session) must be fenced as
// something else, such as ```text; in the files checked, every fence must
// name its language.
//
// A block is one of three forms:
//
//   - a whole file: it has a package clause, and is compiled as it is;
//   - top-level declarations (it parses as the body of a file: func, type,
//     var, import...): they are put in a file after the package clause;
//   - statements, optionally after import declarations: the statements
//     become the body of `func _(params) error { ...; return nil }`, so
//     that a fragment may `return err`.
//
// The template supplies what a fragment takes for granted:
//
//   - imports: a package the fragment names (apipool.New, http.Client,
//     redis.NewUniversalClient...) is imported from the table Imports, by
//     its usual name (recorder/sql as sqlrec), unless the fragment has
//     import declarations of its own: then they must be complete;
//   - variables: a name in the table Vars (ctx, pool, keys, client...) that
//     the fragment uses and does not declare at its top level becomes a
//     parameter of the wrapping func, with the type given there;
//   - use: each variable the fragment declares at its top level is used
//     after it (`_ = x`), so that a snippet may end on `resp, err := ...`.
//
// One more check, on statement blocks: an err assigned at the top level
// must be read (such as `if err != nil`) before the next top-level
// statement assigns err again, so that a snippet never drops an error.
//
// Compiler errors point at the Markdown file and line, through //line
// directives.
//
// TestDocsNamesExist checks the prose's inline code: every `pkg.Name` or
// `pkg.Type.Member` of the module's packages (Packages: `apipool.WithHosts`,
// `sql.Config.Clock`) and every `pool.Method` must name something the code
// declares, but for the removed names the README lists on purpose.
package doccheck

import (
	"bufio"
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Block is a fenced code block of a Markdown file.
type Block struct {
	File string // the Markdown file, as given to Extract
	Line int    // the line of the block's first line of code, from 1
	Lang string // the fence's language (its info string's first word)
	Src  string // the code, without the fence's indentation
}

var fenceRE = regexp.MustCompile("^( {0,3})(```+|~~~+)[ \t]*([^ \t`]*)")

// Extract returns the fenced code blocks of a Markdown file.
func Extract(file string, data []byte) []Block {
	var blocks []Block
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	var (
		in     bool
		fence  string
		indent int
		cur    Block
		lines  []string
		n      int
	)
	for sc.Scan() {
		n++
		line := sc.Text()
		if !in {
			// Fences inside list items are indented further: accept any
			// indentation, and strip as much from the block's lines.
			trimmed := strings.TrimLeft(line, " \t")
			m := fenceRE.FindStringSubmatch(trimmed)
			if m == nil {
				continue
			}
			in, fence, indent = true, m[2], len(line)-len(trimmed)
			cur = Block{File: file, Line: n + 1, Lang: m[3]}
			lines = nil
			continue
		}
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, fence[:1]) && strings.Trim(t, fence[:1]) == "" && len(t) >= len(fence) {
			cur.Src = strings.Join(lines, "\n") + "\n"
			blocks = append(blocks, cur)
			in = false
			continue
		}
		for i := 0; i < indent && len(line) > 0 && (line[0] == ' ' || line[0] == '\t'); i++ {
			line = line[1:]
		}
		lines = append(lines, line)
	}
	return blocks
}

// Imports maps the names snippets use for packages to their import paths.
var Imports = map[string]string{
	"apipool":     "github.com/apipool-ng/apipool",
	"clock":       "github.com/apipool-ng/apipool/clock",
	"dashboard":   "github.com/apipool-ng/apipool/dashboard",
	"errdefs":     "github.com/apipool-ng/apipool/errdefs",
	"recorder":    "github.com/apipool-ng/apipool/recorder",
	"memory":      "github.com/apipool-ng/apipool/recorder/memory",
	"clickhouse":  "github.com/apipool-ng/apipool/recorder/clickhouse",
	"sqlrec":      "github.com/apipool-ng/apipool/recorder/sql",
	"redisstate":  "github.com/apipool-ng/apipool/redisstate",
	"status":      "github.com/apipool-ng/apipool/status",
	"usage":       "github.com/apipool-ng/apipool/usage",
	"sharedstate": "github.com/apipool-ng/apipool/sharedstate",
	"redis":       "github.com/redis/go-redis/v9",
	"otel":        "go.opentelemetry.io/otel",
	"propagation": "go.opentelemetry.io/otel/propagation",
	"sdktrace":    "go.opentelemetry.io/otel/sdk/trace",
	"sdkmetric":   "go.opentelemetry.io/otel/sdk/metric",
	"context":     "context",
	"errors":      "errors",
	"fmt":         "fmt",
	"http":        "net/http",
	"httputil":    "net/http/httputil",
	"io":          "io",
	"log":         "log",
	"os":          "os",
	"slog":        "log/slog",
	"strings":     "strings",
	"time":        "time",
	"url":         "net/url",
}

// Vars are the variables a statement snippet may use without declaring
// them, with their types.
var Vars = map[string]string{
	"ctx":         "context.Context",
	"pool":        "*apipool.Transport",
	"keys":        "[]apipool.Key",
	"client":      "*http.Client",
	"mux":         "*http.ServeMux",
	"since":       "time.Time",
	"until":       "time.Time",
	"redisClient": "redis.UniversalClient",
	"tp":          "*sdktrace.TracerProvider",
	"mp":          "*sdkmetric.MeterProvider",
}

// Generate returns the Go file that holds b, its package named pkg unless b
// is a whole file. lineFile is the name the //line directives give (the
// Markdown file's absolute path, for the compiler's messages). It reports a
// dropped error (see the package documentation) as an error, with the file,
// which then compiles.
func Generate(b Block, pkg, lineFile string) (string, error) {
	src := b.Src
	directive := func(line int) string { return fmt.Sprintf("//line %s:%d\n", lineFile, line) }
	fset := token.NewFileSet()

	// A whole file.
	if f, err := parser.ParseFile(fset, "", src, parser.PackageClauseOnly); err == nil && f.Name != nil {
		return directive(b.Line) + src, nil
	}

	const header = "package p\n"
	// Top-level declarations.
	if f, err := parser.ParseFile(fset, "", header+src, 0); err == nil {
		var out strings.Builder
		fmt.Fprintf(&out, "package %s\n\n", pkg)
		if len(f.Imports) == 0 {
			writeImports(&out, missingImports(f, nil))
		}
		out.WriteString(directive(b.Line))
		out.WriteString(src)
		return out.String(), nil
	}

	// Statements, after optional imports.
	head, body, bodyLine := "", src, b.Line
	if f, err := parser.ParseFile(fset, "", header+src, parser.ImportsOnly); err == nil && len(f.Decls) > 0 {
		end := fset.Position(f.Decls[len(f.Decls)-1].End()).Offset - len(header)
		head, body = src[:end], src[end:]
		bodyLine += strings.Count(head, "\n")
	}
	// Parse the statements to learn what they declare and use; the //line
	// directives make the positions the Markdown file's.
	probe := header + directive(b.Line) + head + "\nfunc _() {\n" + directive(bodyLine) + body + "\n}\n"
	f, err := parser.ParseFile(fset, lineFile, probe, 0)
	if err != nil {
		return "", fmt.Errorf("%s:%d: does not parse as a file, declarations or statements: %v", b.File, b.Line, err)
	}
	fn := f.Decls[len(f.Decls)-1].(*ast.FuncDecl)
	declared := topLevelNames(fn.Body.List)
	used := identNames(fn.Body)

	var params []string
	for name, typ := range Vars {
		if used[name] && !declared[name] {
			params = append(params, name+" "+typ)
		}
	}
	sort.Strings(params)
	paramSrc := strings.Join(params, ", ")
	// A fragment that imports packages itself must import all it uses.
	imports := map[string]string{}
	if head == "" {
		imports = missingImports(f, declared)
	}
	// The parameters' types name packages too.
	pf, err := parser.ParseFile(token.NewFileSet(), "", header+"func _("+paramSrc+") {}\n", 0)
	if err != nil {
		return "", fmt.Errorf("doccheck: bad type in Vars: %v", err)
	}
	have := importedBy(f)
	for name, p := range missingImports(pf, nil) {
		if !have[name] {
			imports[name] = p
		}
	}

	var out strings.Builder
	fmt.Fprintf(&out, "package %s\n\n", pkg)
	writeImports(&out, imports)
	if head != "" {
		out.WriteString(directive(b.Line))
		out.WriteString(head)
		out.WriteString("\n")
	}
	fmt.Fprintf(&out, "func _(%s) error {\n", paramSrc)
	out.WriteString(directive(bodyLine))
	out.WriteString(body)
	var names []string
	for name := range declared {
		if name != "_" {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	out.WriteString("\n")
	for _, name := range names {
		fmt.Fprintf(&out, "\t_ = %s\n", name)
	}
	if !endsInReturn(fn.Body.List) {
		out.WriteString("\treturn nil\n")
	}
	out.WriteString("}\n")
	return out.String(), checkDroppedErr(fset, b, fn.Body.List)
}

func writeImports(out *strings.Builder, imports map[string]string) {
	if len(imports) == 0 {
		return
	}
	var names []string
	for name := range imports {
		names = append(names, name)
	}
	sort.Strings(names)
	out.WriteString("import (\n")
	for _, name := range names {
		fmt.Fprintf(out, "\t%s %q\n", name, imports[name])
	}
	out.WriteString(")\n\n")
}

// importedBy returns the names f's import declarations bind.
func importedBy(f *ast.File) map[string]bool {
	names := map[string]bool{}
	for _, spec := range f.Imports {
		p := strings.Trim(spec.Path.Value, `"`)
		switch {
		case spec.Name != nil:
			names[spec.Name.Name] = true
		default:
			name := path.Base(p)
			for n, q := range Imports {
				if q == p {
					name = n
				}
			}
			names[name] = true
		}
	}
	return names
}

// missingImports returns the packages of Imports that f names in selectors
// (pkg.Name) without importing them, leaving out the names in local.
func missingImports(f *ast.File, local map[string]bool) map[string]string {
	have := importedBy(f)
	need := map[string]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		sel, ok := n.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		id, ok := sel.X.(*ast.Ident)
		if !ok {
			return true
		}
		if p, ok := Imports[id.Name]; ok && !have[id.Name] && !local[id.Name] {
			need[id.Name] = p
		}
		return true
	})
	return need
}

// topLevelNames returns the variables, constants and types stmts declare
// at their own level.
func topLevelNames(stmts []ast.Stmt) map[string]bool {
	names := map[string]bool{}
	for _, s := range stmts {
		switch s := s.(type) {
		case *ast.AssignStmt:
			if s.Tok == token.DEFINE {
				for _, l := range s.Lhs {
					if id, ok := l.(*ast.Ident); ok {
						names[id.Name] = true
					}
				}
			}
		case *ast.DeclStmt:
			if g, ok := s.Decl.(*ast.GenDecl); ok && g.Tok == token.VAR {
				for _, spec := range g.Specs {
					for _, id := range spec.(*ast.ValueSpec).Names {
						names[id.Name] = true
					}
				}
			}
		}
	}
	return names
}

func identNames(n ast.Node) map[string]bool {
	names := map[string]bool{}
	ast.Inspect(n, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok {
			ast.Inspect(sel.X, func(n ast.Node) bool {
				if id, ok := n.(*ast.Ident); ok {
					names[id.Name] = true
				}
				return true
			})
			return false // not the selected name
		}
		if id, ok := n.(*ast.Ident); ok {
			names[id.Name] = true
		}
		return true
	})
	return names
}

func endsInReturn(stmts []ast.Stmt) bool {
	if len(stmts) == 0 {
		return false
	}
	_, ok := stmts[len(stmts)-1].(*ast.ReturnStmt)
	return ok
}

// checkDroppedErr reports a top-level assignment to err that the next one
// overwrites before anything reads err.
func checkDroppedErr(fset *token.FileSet, b Block, stmts []ast.Stmt) error {
	pending := ast.Node(nil)
	for _, s := range stmts {
		assigns, lhs := false, map[*ast.Ident]bool{}
		if a, ok := s.(*ast.AssignStmt); ok {
			for _, l := range a.Lhs {
				if id, ok := l.(*ast.Ident); ok && id.Name == "err" {
					assigns = true
					lhs[id] = true
				}
			}
		}
		reads := false
		ast.Inspect(s, func(n ast.Node) bool {
			if id, ok := n.(*ast.Ident); ok && id.Name == "err" && !lhs[id] {
				reads = true
			}
			return true
		})
		if reads {
			pending = nil
		}
		if assigns {
			if pending != nil {
				return fmt.Errorf("%s:%d: the err assigned here is overwritten at line %d before it is checked",
					b.File, fset.Position(pending.Pos()).Line, fset.Position(s.Pos()).Line)
			}
			pending = s
		}
	}
	return nil
}

// Packages maps the names the docs' prose gives the module's packages, in
// inline code such as `redisstate.WithPrefix`, to their directories in the
// module; "pool" stands for a *apipool.Transport.
var Packages = map[string]string{
	"apipool":     ".",
	"clock":       "clock",
	"dashboard":   "dashboard",
	"errdefs":     "errdefs",
	"recorder":    "recorder",
	"memory":      "recorder/memory",
	"clickhouse":  "recorder/clickhouse",
	"sql":         "recorder/sql",
	"sqlrec":      "recorder/sql",
	"redisstate":  "redisstate",
	"status":      "status",
	"usage":       "usage",
	"sharedstate": "sharedstate",
}

// Ref is a reference to a package's name in a Markdown file's inline code:
// `pkg.Name` or `pkg.Name.Member` (Member empty when absent).
type Ref struct {
	File         string
	Line         int
	Pkg          string
	Name, Member string
}

func (r Ref) String() string {
	s := r.Pkg + "." + r.Name
	if r.Member != "" {
		s += "." + r.Member
	}
	return s
}

var refRE = regexp.MustCompile(`(?:^|[^\w.])([a-z]\w*)\.([A-Z]\w*)(?:\.([A-Z]\w*))?`)

// codeSpans returns the offsets of the contents of text's code spans: a
// run of n backticks up to the next run of exactly n (CommonMark).
func codeSpans(text string) [][2]int {
	var spans [][2]int
	run := func(i int) int { // the length of the backtick run at i
		n := 0
		for i+n < len(text) && text[i+n] == '`' {
			n++
		}
		return n
	}
	for i := 0; i < len(text); {
		if text[i] != '`' {
			i++
			continue
		}
		n := run(i)
		start, found := i+n, false
		for j := start; j < len(text); {
			if text[j] != '`' {
				j++
				continue
			}
			m := run(j)
			if m == n {
				spans = append(spans, [2]int{start, j})
				i, found = j+m, true
				break
			}
			j += m
		}
		if !found {
			i = start // a literal run of backticks
		}
	}
	return spans
}

// InlineRefs returns the references to the packages of Packages (and to
// pool's methods) in the inline code of a Markdown file, outside its fenced
// blocks.
func InlineRefs(file string, data []byte) []Ref {
	// Blank out the fenced blocks, keeping the line count.
	lines := strings.Split(string(data), "\n")
	var fence string
	for i, line := range lines {
		t := strings.TrimLeft(line, " \t")
		if fence == "" {
			if m := fenceRE.FindStringSubmatch(t); m != nil {
				fence = m[2]
				lines[i] = ""
			}
			continue
		}
		if tt := strings.TrimSpace(t); strings.HasPrefix(tt, fence[:1]) && strings.Trim(tt, fence[:1]) == "" && len(tt) >= len(fence) {
			fence = ""
		}
		lines[i] = ""
	}
	text := strings.Join(lines, "\n")
	var refs []Ref
	for _, sp := range codeSpans(text) {
		span := text[sp[0]:sp[1]]
		line := 1 + strings.Count(text[:sp[0]], "\n")
		for _, i := range refRE.FindAllStringSubmatchIndex(span, -1) {
			pkg, name, member := span[i[2]:i[3]], span[i[4]:i[5]], ""
			if i[6] >= 0 {
				member = span[i[6]:i[7]]
			}
			if _, ok := Packages[pkg]; !ok && pkg != "pool" {
				continue
			}
			refs = append(refs, Ref{File: file, Line: line + strings.Count(span[:i[2]], "\n"), Pkg: pkg, Name: name, Member: member})
		}
	}
	return refs
}

// Exported returns the exported names a package's non-test files declare
// at top level, with the exported methods and struct fields of its types
// (as "Type.Name"). dir is the package's directory.
func Exported(dir string) (map[string]bool, error) {
	fset := token.NewFileSet()
	entries, err := filepathGlob(dir)
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, file := range entries {
		f, err := parser.ParseFile(fset, file, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil {
					names[d.Name.Name] = true
					continue
				}
				t := d.Recv.List[0].Type
				if s, ok := t.(*ast.StarExpr); ok {
					t = s.X
				}
				if id, ok := t.(*ast.Ident); ok {
					names[id.Name+"."+d.Name.Name] = true
				}
			case *ast.GenDecl:
				for _, spec := range d.Specs {
					switch s := spec.(type) {
					case *ast.ValueSpec:
						for _, id := range s.Names {
							names[id.Name] = true
						}
					case *ast.TypeSpec:
						names[s.Name.Name] = true
						st, ok := s.Type.(*ast.StructType)
						if !ok {
							continue
						}
						for _, fl := range st.Fields.List {
							for _, id := range fl.Names {
								names[s.Name.Name+"."+id.Name] = true
							}
							if len(fl.Names) == 0 { // embedded
								t := fl.Type
								if s, ok := t.(*ast.StarExpr); ok {
									t = s.X
								}
								if sel, ok := t.(*ast.SelectorExpr); ok {
									t = sel.Sel
								}
								if id, ok := t.(*ast.Ident); ok {
									names[s.Name.Name+"."+id.Name] = true
								}
							}
						}
					}
				}
			}
		}
	}
	return names, nil
}

func filepathGlob(dir string) ([]string, error) {
	all, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	var files []string
	for _, f := range all {
		if !strings.HasSuffix(f, "_test.go") {
			files = append(files, f)
		}
	}
	return files, nil
}
