package config

import (
	"cmp"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/hsmsh/hsmsh/internal/tomlscan"
)

// parser turns a decoded file into a Config, collecting every problem with
// the line it is on.
type parser struct {
	path string
	doc  *tomlscan.Doc
	c    *Config
	errs []*Error
	// clusterKeys holds, for each entry of c.Clusters, its key in the
	// file (clusters[N]), for messages about it found later.
	clusterKeys []string
}

// parse decodes the file contents data, named path, on top of the defaults.
func parse(path string, data []byte) (*Config, *tomlscan.Doc, error) {
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, nil, &Error{File: path, Line: pe.Position.Line, Msg: "syntax error: " + pe.Message}
		}
		return nil, nil, &Error{File: path, Msg: err.Error()}
	}

	c := Default()
	c.Path = path
	// Relative paths in the file are relative to the file, wherever the
	// shell was started from.
	if abs, err := filepath.Abs(path); err == nil {
		c.base = filepath.Dir(abs)
	} else {
		c.base = filepath.Dir(path)
	}
	c.resolveTLS()

	p := &parser{path: path, doc: tomlscan.Scan(string(data)), c: c}
	for _, table := range sortedKeys(raw) {
		p.table(table, raw[table])
	}
	// Only now is the [cluster] id final, whichever table came first.
	p.checkClusterIDs()
	if len(p.errs) > 0 {
		// Report problems in file order, whatever order the map gave them.
		slices.SortStableFunc(p.errs, func(a, b *Error) int {
			return cmp.Or(cmp.Compare(a.Line, b.Line), strings.Compare(a.Key, b.Key))
		})
		if len(p.errs) == 1 {
			return nil, nil, p.errs[0]
		}
		errs := make([]error, len(p.errs))
		for i, e := range p.errs {
			errs[i] = e
		}
		return nil, nil, errors.Join(errs...)
	}
	return c, p.doc, nil
}

func (p *parser) errorf(key, format string, args ...any) {
	p.errs = append(p.errs, &Error{
		File: p.path,
		Line: p.doc.KeyLine(key),
		Key:  key,
		Msg:  fmt.Sprintf(format, args...),
	})
}

// table checks one top-level table.
func (p *parser) table(name string, v any) {
	keys, known := tables[name]
	if !known {
		what := "key"
		if _, ok := v.(map[string]any); ok {
			what = "table"
		}
		p.errorf(name, "unknown %s (known tables: %s)", what, strings.Join(tableNames(), ", "))
		return
	}
	if name == "clusters" {
		p.clusters(v)
		return
	}
	m, ok := v.(map[string]any)
	if !ok {
		p.errorf(name, "must be a table ([%s]), got %s", name, tomlscan.Describe(v))
		return
	}
	for _, k := range sortedKeys(m) {
		full := name + "." + k
		if full == "cluster.servers" {
			p.c.Cluster.Servers, _ = p.servers(full, m[k])
			continue
		}
		if full == "quorum.rules" {
			p.quorumRules(m[k])
			continue
		}
		s, ok := lookupSetting(full)
		if !ok {
			p.errorf(full, "unknown key (known keys in [%s]: %s)", name, strings.Join(keys, ", "))
			continue
		}
		p.setting(s, m[k])
	}
}

// setting checks the TOML type of v and stores it.
func (p *parser) setting(s *setting, v any) {
	str, ok := p.scalar(s.name, s, v)
	if !ok {
		return
	}
	if err := p.c.apply(s, str, p.c.base); err != nil {
		p.errorf(s.name, "%v", err)
		return
	}
	p.c.setSource(s.name, SourceFile)
}

// scalar checks that the TOML type of v suits s and returns v as the text
// that apply parses, reporting a mismatch at key. The key is not always
// s.name: clusters[1].hsms is checked as the setting cluster.hsms.
func (p *parser) scalar(key string, s *setting, v any) (string, bool) {
	switch x := v.(type) {
	case string:
		if s.kind != kindInt && s.kind != kindBool {
			return x, true
		}
	case int64:
		if s.kind == kindInt {
			return strconv.FormatInt(x, 10), true
		}
	case bool:
		if s.kind == kindBool {
			return strconv.FormatBool(x), true
		}
	}
	p.typeError(key, s, v)
	return "", false
}

func (p *parser) typeError(key string, s *setting, v any) {
	var want string
	switch s.kind {
	case kindInt:
		want = "an integer"
	case kindBool:
		want = "true or false"
	case kindDuration:
		want = `a duration string such as "5s"`
	default:
		want = "a string"
	}
	p.errorf(key, "must be %s, got %s", want, tomlscan.Describe(v))
}

// servers checks the server tables at array: cluster.servers, or
// clusters[N].servers for a [[clusters]] entry. It returns the valid servers,
// and false if it reported a problem.
func (p *parser) servers(array string, v any) ([]Server, bool) {
	// Messages name the tables as the user writes their headers.
	header := "[[" + arrayName(array) + "]]"
	list, ok := p.arrayOfTables(array, v)
	if !ok {
		return nil, false
	}
	allOK := true
	ids := make(map[string]string) // id -> key where it was first used
	var servers []Server
	for i, m := range list {
		key := fmt.Sprintf("%s[%d]", array, i)
		var srv Server
		ok := true
		for _, k := range sortedKeys(m) {
			var dst *string
			switch k {
			case "id":
				dst = &srv.ID
			case "address":
				dst = &srv.Address
			default:
				p.errorf(key+"."+k, "unknown key (known keys in %s: %s)", header, strings.Join(serverKeys, ", "))
				ok = false
				continue
			}
			s, isString := m[k].(string)
			if !isString {
				p.errorf(key+"."+k, "must be a string, got %s", tomlscan.Describe(m[k]))
				ok = false
				continue
			}
			*dst = s
		}
		if _, has := m["id"]; !has {
			p.errorf(key, "server has no id; add id = %q to this %s table", fmt.Sprintf("hsm-%d", i+1), header)
			ok = false
		} else if _, isString := m["id"].(string); isString {
			if err := checkID(srv.ID); err != nil {
				p.errorf(key+".id", "%v", err)
				ok = false
			}
		}
		if _, has := m["address"]; !has {
			p.errorf(key, "server has no address; add address = \"HOST:PORT\" to this %s table", header)
			ok = false
		} else if _, isString := m["address"].(string); isString {
			if err := checkAddress(srv.Address); err != nil {
				p.errorf(key+".address", "%v", err)
				ok = false
			}
		}
		if !ok {
			allOK = false
			continue
		}
		if first, dup := ids[srv.ID]; dup {
			p.errorf(key+".id", "duplicate server id %q (also used at line %d); give each server its own id",
				srv.ID, p.doc.KeyLine(first))
			allOK = false
			continue
		}
		ids[srv.ID] = key + ".id"
		servers = append(servers, srv)
	}
	return servers, allOK
}

// arrayName turns the key of an array of tables into the name its header
// uses, without element indexes: clusters[1].servers -> clusters.servers.
func arrayName(key string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(key, '[')
		if i < 0 {
			b.WriteString(key)
			return b.String()
		}
		b.WriteString(key[:i])
		j := strings.IndexByte(key[i:], ']')
		if j < 0 {
			return b.String()
		}
		key = key[i+j+1:]
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
