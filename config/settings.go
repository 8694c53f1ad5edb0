package config

import (
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// kind is the type of a setting's value.
type kind int

const (
	kindString kind = iota
	kindInt
	kindBool
	kindDuration
	kindPath // a string that names a file or folder
)

// setting describes one scalar setting: its dotted name, how to parse and
// check a value, and where the value lives in a Config.
type setting struct {
	name     string
	kind     kind
	min, max int                // kindInt: the allowed range
	check    func(string) error // kindString: validates a value
	str      func(*Config) *string
	int      func(*Config) *int
	bool     func(*Config) *bool
	dur      func(*Config) *time.Duration
	path     func(*TLS) *string // kindPath
	file     string             // kindPath: default file name in pki_dir
	// minDur, maxDur bound a kindDuration; zero means the sync interval's
	// bounds.
	minDur, maxDur time.Duration
	// zeroOff allows a kindDuration of 0, outside minDur..maxDur: it turns
	// off what the setting times.
	zeroOff bool
}

const (
	minSyncInterval = 100 * time.Millisecond
	maxSyncInterval = 24 * time.Hour
	maxHSMs         = 28
	// An HSM server's connection limits: below a second a connection
	// would be closed between a client's commands; past a day an
	// abandoned one holds its place for too long. 100000 connections is
	// far beyond one process's usual file-descriptor limit.
	minIdleTimeout = time.Second
	maxIdleTimeout = 24 * time.Hour
	maxConnections = 100000
)

// settings lists every scalar setting, sorted by name.
var settings = func() []*setting {
	tls := func(name, file string, path func(*TLS) *string) *setting {
		return &setting{name: "tls." + name, kind: kindPath, path: path, file: file}
	}
	s := []*setting{
		{name: "client.retry_on_missing_key", kind: kindInt, min: 0, max: 10,
			int: func(c *Config) *int { return &c.Client.RetryOnMissingKey }},
		{name: "cluster.hsms", kind: kindInt, min: 1, max: maxHSMs,
			int: func(c *Config) *int { return &c.Cluster.HSMs }},
		{name: "cluster.id", kind: kindString, check: checkID,
			str: func(c *Config) *string { return &c.Cluster.ID }},
		{name: "cluster.mode", kind: kindString, check: checkMode,
			str: func(c *Config) *string { return &c.Cluster.Mode }},
		{name: "cluster.profile", kind: kindString, check: checkProfile,
			str: func(c *Config) *string { return &c.Cluster.Profile }},
		{name: "cluster.transport", kind: kindString, check: checkTransport,
			str: func(c *Config) *string { return &c.Cluster.Transport }},
		{name: "durability.create_object_minimum_nodes", kind: kindInt, min: 1, max: maxHSMs,
			int: func(c *Config) *int { return &c.Durability.CreateObjectMinimumNodes }},
		{name: "durability.key_availability_check", kind: kindBool,
			bool: func(c *Config) *bool { return &c.Durability.KeyAvailabilityCheck }},
		{name: "durability.server_sync_interval", kind: kindDuration,
			dur: func(c *Config) *time.Duration { return &c.Durability.ServerSyncInterval }},
		{name: "server.idle_timeout", kind: kindDuration, minDur: minIdleTimeout, maxDur: maxIdleTimeout, zeroOff: true,
			dur: func(c *Config) *time.Duration { return &c.Server.IdleTimeout }},
		{name: "server.max_connections", kind: kindInt, min: 1, max: maxConnections,
			int: func(c *Config) *int { return &c.Server.MaxConnections }},
		{name: "session.lifetime", kind: kindDuration, minDur: time.Minute, maxDur: 24 * time.Hour,
			dur: func(c *Config) *time.Duration { return &c.Session.Lifetime }},
		{name: "session.renegotiate", kind: kindBool,
			bool: func(c *Config) *bool { return &c.Session.Renegotiate }},
		tls("client_cert", "client.crt", func(t *TLS) *string { return &t.ClientCert }),
		tls("client_key", "client.key", func(t *TLS) *string { return &t.ClientKey }),
		tls("cluster_cert", "cluster.crt", func(t *TLS) *string { return &t.ClusterCert }),
		tls("cluster_key", "cluster.key", func(t *TLS) *string { return &t.ClusterKey }),
		tls("customer_ca", "customerCA.crt", func(t *TLS) *string { return &t.CustomerCA }),
		tls("pki_dir", "", func(t *TLS) *string { return &t.PKIDir }),
		tls("server_cert", "server.crt", func(t *TLS) *string { return &t.ServerCert }),
		tls("server_key", "server.key", func(t *TLS) *string { return &t.ServerKey }),
		tls("trust_dir", "certs", func(t *TLS) *string { return &t.TrustDir }),
		{name: "ui.theme", kind: kindString, check: checkTheme,
			str: func(c *Config) *string { return &c.UI.Theme }},
	}
	slices.SortFunc(s, func(a, b *setting) int { return strings.Compare(a.name, b.name) })
	return s
}()

// tables lists the known tables of the file and their keys, for unknown-key
// messages. cluster.servers is an array of tables, not a scalar setting, and
// so is clusters, whose entries take the keys of [cluster].
var tables = func() map[string][]string {
	m := map[string][]string{"cluster": {"servers"}, "quorum": {"rules"}}
	for _, s := range settings {
		table, key, _ := strings.Cut(s.name, ".")
		m[table] = append(m[table], key)
	}
	for _, keys := range m {
		slices.Sort(keys)
	}
	m["clusters"] = slices.Clone(m["cluster"])
	return m
}()

var serverKeys = []string{"address", "id"}

func lookupSetting(name string) (*setting, bool) {
	i, ok := slices.BinarySearchFunc(settings, name, func(s *setting, name string) int {
		return strings.Compare(s.name, name)
	})
	if !ok {
		return nil, false
	}
	return settings[i], true
}

func settingNames() []string {
	names := make([]string, len(settings))
	for i, s := range settings {
		names[i] = s.name
	}
	return names
}

func tableNames() []string {
	names := make([]string, 0, len(tables))
	for t := range tables {
		names = append(names, t)
	}
	slices.Sort(names)
	return names
}

// parseValue parses and checks value for s and returns it typed:
// string, int, bool or time.Duration.
func (s *setting) parseValue(value string) (any, error) {
	switch s.kind {
	case kindInt:
		n, err := strconv.Atoi(strings.TrimSpace(value))
		if err != nil {
			return nil, fmt.Errorf("must be an integer, got %q", value)
		}
		if n < s.min || n > s.max {
			return nil, fmt.Errorf("%d is out of range (%d..%d)", n, s.min, s.max)
		}
		return n, nil
	case kindBool:
		switch strings.TrimSpace(value) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
		return nil, fmt.Errorf("must be true or false, got %q", value)
	case kindDuration:
		d, err := time.ParseDuration(strings.TrimSpace(value))
		if err != nil {
			return nil, fmt.Errorf("%q is not a duration (examples: 500ms, 5s, 1m30s)", value)
		}
		lo, hi := minSyncInterval, maxSyncInterval
		if s.minDur > 0 {
			lo, hi = s.minDur, s.maxDur
		}
		if d == 0 && s.zeroOff {
			return d, nil
		}
		if d < lo || d > hi {
			if s.zeroOff {
				return nil, fmt.Errorf("%s is out of range (0 to turn it off, or %s..%s)", formatDuration(d),
					formatDuration(lo), formatDuration(hi))
			}
			return nil, fmt.Errorf("%s is out of range (%s..%s)", formatDuration(d),
				formatDuration(lo), formatDuration(hi))
		}
		return d, nil
	case kindString:
		if err := s.check(value); err != nil {
			return nil, err
		}
	}
	return value, nil
}

// apply parses value and stores it in c. Relative paths are resolved against
// base, or against the current directory if base is "".
func (c *Config) apply(s *setting, value, base string) error {
	v, err := s.parseValue(value)
	if err != nil {
		return err
	}
	switch s.kind {
	case kindInt:
		*s.int(c) = v.(int)
	case kindBool:
		*s.bool(c) = v.(bool)
	case kindDuration:
		*s.dur(c) = v.(time.Duration)
	case kindString:
		*s.str(c) = value
	case kindPath:
		*s.path(&c.given) = resolvePath(value, base)
		c.resolveTLS()
	}
	return nil
}

// literal returns value, which must be valid for s, as a TOML value.
func (s *setting) literal(value string) string {
	v, _ := s.parseValue(value)
	switch s.kind {
	case kindInt:
		return strconv.Itoa(v.(int))
	case kindBool:
		return strconv.FormatBool(v.(bool))
	case kindDuration:
		// Keep the user's spelling ("90s" stays "90s").
		return quote(strings.TrimSpace(value))
	}
	return quote(value)
}

// format returns the current value of s in c as it would be written.
func (s *setting) format(c *Config) string {
	switch s.kind {
	case kindInt:
		return strconv.Itoa(*s.int(c))
	case kindBool:
		return strconv.FormatBool(*s.bool(c))
	case kindDuration:
		return formatDuration(*s.dur(c))
	case kindPath:
		return *s.path(&c.TLS)
	}
	return *s.str(c)
}

// formatDuration is time.Duration.String without the zero tails, so that
// 24h prints as "24h", not "24h0m0s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// resolvePath makes p absolute, relative to base (or the current directory
// if base is ""). An empty p stays empty: it means "use the default".
func resolvePath(p, base string) string {
	switch {
	case p == "":
		return ""
	case filepath.IsAbs(p):
		return filepath.Clean(p)
	case base != "":
		return filepath.Join(base, p)
	}
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}

// checkID checks a cluster or server id. The rule keeps ids safe to use in
// file names and log lines.
func checkID(id string) error {
	ok := len(id) >= 1 && len(id) <= 64
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-') {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("%q is not a valid id (use 1 to 64 letters, digits, '_', '.' or '-')", id)
	}
	return nil
}

func checkMode(mode string) error {
	if mode != "embedded" && mode != "remote" {
		return fmt.Errorf("%q is not a mode (use \"embedded\" or \"remote\")", mode)
	}
	return nil
}

func checkProfile(p string) error {
	switch p {
	case "none", "hsm1.medium", "hsm2m.medium":
		return nil
	}
	return fmt.Errorf("%q is not an HSM profile (use \"none\", or \"hsm1.medium\" or \"hsm2m.medium\" for AWS's published rates)", p)
}

func checkTransport(t string) error {
	if t != "tls" && t != "direct" {
		return fmt.Errorf("%q is not a transport (use \"direct\" for in-process calls, the default, or \"tls\" for nested TLS to the in-process HSMs over in-memory pipes)", t)
	}
	return nil
}

func checkTheme(theme string) error {
	if theme == "" {
		return fmt.Errorf("must not be empty (use \"default\" for the default theme)")
	}
	return nil
}

// checkAddress checks a server address; the cluster needs a host and a
// usable TCP port to dial.
func checkAddress(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not a host:port address (%v); use for example \"10.0.0.5:2223\"", addr, err)
	}
	if host == "" {
		return fmt.Errorf("%q has no host; use for example \"10.0.0.5:2223\"", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q has port %q; the port must be a number from 1 to 65535", addr, port)
	}
	return nil
}

// quote returns s as a TOML basic string.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if r < 0x20 || r == 0x7f {
				fmt.Fprintf(&b, `\u%04X`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}
