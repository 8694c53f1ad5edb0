package config

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/hsmsh/hsmsh/internal/tomlscan"
)

// QuorumRule is a KMS-style quorum rule set for one command: the command
// passes if its approvers meet any one of the alternatives.
type QuorumRule struct {
	// Command is a command path, such as "user delete".
	Command string
	// Alternatives are each a set of requirements, such as
	// "1 admin + 2 crypto-user".
	Alternatives [][]Requirement
}

// Requirement is "at least Min approvers with Role".
type Requirement struct {
	Role string
	Min  int
}

var quorumRuleKeys = []string{"alternatives", "command"}

// quorumRoles are the roles an approver can have.
var quorumRoles = []string{"admin", "crypto-user"}

// ParseAlternative reads "N role [+ N role]…", e.g. "1 admin + 2 crypto-user".
func ParseAlternative(s string) ([]Requirement, error) {
	var out []Requirement
	seen := map[string]bool{}
	for _, part := range strings.Split(s, "+") {
		f := strings.Fields(part)
		if len(f) != 2 {
			return nil, fmt.Errorf("%q is not N ROLE [+ N ROLE]… (for example \"2 admin\" or \"1 admin + 2 crypto-user\")", s)
		}
		n, err := strconv.Atoi(f[0])
		if err != nil || n < 1 || n > 8 {
			return nil, fmt.Errorf("%q: %q is not a count from 1 to 8", s, f[0])
		}
		role := f[1]
		if role != quorumRoles[0] && role != quorumRoles[1] {
			return nil, fmt.Errorf("%q: %q is not a role (use admin or crypto-user)", s, role)
		}
		if seen[role] {
			return nil, fmt.Errorf("%q names %s twice: give one count per role", s, role)
		}
		seen[role] = true
		out = append(out, Requirement{Role: role, Min: n})
	}
	return out, nil
}

// quorumRules checks the [[quorum.rules]] tables.
func (p *parser) quorumRules(v any) {
	list, ok := p.arrayOfTables("quorum.rules", v)
	if !ok {
		return
	}
	seen := map[string]string{}
	for i, m := range list {
		key := fmt.Sprintf("quorum.rules[%d]", i)
		var r QuorumRule
		ok := true
		for _, k := range sortedKeys(m) {
			switch k {
			case "command":
				s, isString := m[k].(string)
				if !isString || strings.TrimSpace(s) == "" {
					p.errorf(key+".command", "must be a command path such as \"user delete\", got %s", tomlscan.Describe(m[k]))
					ok = false
					continue
				}
				r.Command = strings.Join(strings.Fields(s), " ")
			case "alternatives":
				arr, isArr := m[k].([]any)
				if !isArr || len(arr) == 0 {
					p.errorf(key+".alternatives", "must be a non-empty array of strings such as [\"2 admin\", \"1 admin + 2 crypto-user\"], got %s", tomlscan.Describe(m[k]))
					ok = false
					continue
				}
				for _, a := range arr {
					s, isString := a.(string)
					if !isString {
						p.errorf(key+".alternatives", "each alternative must be a string such as \"2 admin\", got %s", tomlscan.Describe(a))
						ok = false
						break
					}
					reqs, err := ParseAlternative(s)
					if err != nil {
						p.errorf(key+".alternatives", "%v", err)
						ok = false
						break
					}
					r.Alternatives = append(r.Alternatives, reqs)
				}
			default:
				p.errorf(key+"."+k, "unknown key (known keys in [[quorum.rules]]: %s)", strings.Join(quorumRuleKeys, ", "))
				ok = false
			}
		}
		if r.Command == "" && ok {
			p.errorf(key, "rule has no command; add command = \"user delete\" (for example)")
			ok = false
		}
		if r.Alternatives == nil && ok {
			p.errorf(key, "rule has no alternatives; add alternatives = [\"2 admin\"] (for example)")
			ok = false
		}
		if !ok {
			continue
		}
		if first, dup := seen[r.Command]; dup {
			p.errorf(key+".command", "a second rule for %q (the first is at line %d): put its alternatives in one rule", r.Command, p.doc.KeyLine(first))
			continue
		}
		seen[r.Command] = key + ".command"
		p.c.Quorum.Rules = append(p.c.Quorum.Rules, r)
	}
}

// tableArray reads an array of tables as the TOML decoder gives it. When v
// is not one, bad is what is wrong: v itself, or the element of v that is
// not a table (inArray true).
func tableArray(v any) (list []map[string]any, bad any, inArray bool) {
	switch x := v.(type) {
	case []map[string]any:
		return x, nil, false
	case []any:
		for _, e := range x {
			m, ok := e.(map[string]any)
			if !ok {
				return nil, e, true
			}
			list = append(list, m)
		}
		return list, nil, false
	}
	return nil, v, false
}

// arrayOfTables reads [[key]] tables, reporting anything else at key. The
// message names the header without indexes: [[clusters.servers]] for the
// key clusters[1].servers.
func (p *parser) arrayOfTables(key string, v any) ([]map[string]any, bool) {
	list, bad, inArray := tableArray(v)
	switch {
	case inArray:
		p.errorf(key, "must be an array of tables ([[%s]]), got an array holding %s", arrayName(key), tomlscan.Describe(bad))
		return nil, false
	case bad != nil:
		p.errorf(key, "must be an array of tables ([[%s]]), got %s", arrayName(key), tomlscan.Describe(bad))
		return nil, false
	}
	return list, true
}
