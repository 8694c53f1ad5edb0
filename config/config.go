// Package config loads, validates, layers and edits hsmsh's TOML
// configuration file.
//
// A setting's value can come from several places. From lowest to highest
// precedence they are: the built-in default, the config file, the
// environment (HSMSH_<TABLE>_<KEY>), `config set` in a session, and a
// command-line flag. A Config remembers where each setting came from so that
// `config show` can say so and so that a lower-precedence source cannot
// silently undo a higher one.
//
// The file format is strict on purpose: an HSM cluster that is configured
// slightly wrong (a misspelt durability key, say) must not quietly run with
// defaults. Every problem is reported as FILE:LINE: KEY: message.
//
// Edit and EditServers change the file in place, keeping the user's comments,
// ordering and formatting, and replace it atomically so that a crash never
// leaves a half-written config behind.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hsmsh/hsmsh/internal/tomlscan"
)

// Source says where a setting's current value came from.
type Source string

// The sources, from lowest to highest precedence.
const (
	SourceDefault Source = "default"
	SourceFile    Source = "file"
	SourceEnv     Source = "env"
	SourceCommand Source = "command" // `config set` in a session
	SourceFlag    Source = "flag"    // a command-line flag
)

// rank orders sources by precedence; 0 means unknown.
func (s Source) rank() int {
	switch s {
	case SourceDefault:
		return 1
	case SourceFile:
		return 2
	case SourceEnv:
		return 3
	case SourceCommand:
		return 4
	case SourceFlag:
		return 5
	}
	return 0
}

// Config is hsmsh's configuration. Change it with Set rather than by
// assigning fields, so that sources are recorded and TLS paths stay resolved.
type Config struct {
	Path    string // the file that was loaded, "" if none
	Cluster Cluster
	// Clusters are further clusters, from [[clusters]] tables, in file
	// order. They come only from the file, and no two clusters, counting
	// Cluster, share an id.
	Clusters   []Cluster
	Durability Durability
	Client     Client
	TLS        TLS
	UI         UI
	// Quorum holds the KMS-style quorum rule sets the HSMs apply.
	Quorum Quorum
	// Session holds the authenticated sessions' settings.
	Session Session
	// Server holds the limits of an HSM server (hsmsh serve), from the
	// [server] table.
	Server ServerLimits

	sources map[string]Source // setting name -> source; missing means default
	given   TLS               // TLS paths as set (already absolute), "" = derive
	base    string            // folder that the default pki_dir is relative to
}

// Cluster says which HSMs the shell talks to.
type Cluster struct {
	ID   string
	Mode string // "embedded" or "remote"
	HSMs int    // embedded mode: how many HSMs to run
	// Transport is how the embedded mode reaches its in-process HSMs:
	// "direct" (the default: calls through each HSM's door, in-process)
	// or "tls" (the nested TLS stack over in-memory pipes, for teaching
	// the two layers without servers).
	Transport string
	// Profile makes each embedded HSM serve at a real HSM type's published
	// rates: "none", "hsm1.medium" or "hsm2m.medium".
	Profile string
	Servers []Server
}

// Server is one remote HSM server.
type Server struct {
	ID      string `json:"id"`
	Address string `json:"address"` // host:port
}

// Durability controls how hard the cluster works to keep keys available.
type Durability struct {
	CreateObjectMinimumNodes int
	KeyAvailabilityCheck     bool
	ServerSyncInterval       time.Duration
}

// Client controls the client's behaviour towards the cluster.
type Client struct {
	RetryOnMissingKey int
}

// TLS holds the paths of the PKI files. After Load every field is set:
// relative paths from the file are resolved against the file's folder, and
// empty ones default to a file in PKIDir.
type TLS struct {
	PKIDir      string
	TrustDir    string
	ClientCert  string
	ClientKey   string
	CustomerCA  string
	ServerCert  string
	ServerKey   string
	ClusterCert string
	ClusterKey  string
}

// Session holds the authenticated sessions' settings.
type Session struct {
	// Lifetime is how long a login session (its EKT) lasts.
	Lifetime time.Duration
	// Renegotiate keeps the login's password in the client's memory so
	// that an expired session, or one an HSM restart interrupted, is
	// renegotiated without asking; false makes the user log in again.
	Renegotiate bool
}

// ServerLimits bound what clients may cost an HSM server (hsmsh serve),
// so that abandoned or flooding connections cannot exhaust it.
type ServerLimits struct {
	// IdleTimeout closes a connection with no request in flight and none
	// sent for that long; 0 never does.
	IdleTimeout time.Duration
	// MaxConnections caps the connections open at once; one more is
	// closed as soon as it is accepted.
	MaxConnections int
}

// Quorum holds quorum rule sets, from [[quorum.rules]] tables.
type Quorum struct {
	Rules []QuorumRule
}

// UI holds presentation settings.
type UI struct {
	Theme string
}

// Setting is one row of `config show`.
type Setting struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Source Source `json:"source"`
	// Note says what the value means as things stand, where the name
	// alone does not, or that the setting is not in use.
	Note string `json:"note,omitempty"`
}

// Change is one setting to write with Edit.
type Change struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Error is a problem with one setting. Its message has the form
// FILE:LINE: KEY: message, leaving out the parts that are unknown.
type Error struct {
	File string // the config file, "" if the problem is not in a file
	Line int    // 1-based, 0 if unknown
	Key  string // dotted setting name, or an environment variable
	Msg  string // what is wrong and what to do about it
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Default returns the built-in configuration. Its pki_dir is "pki" in the
// current directory.
func Default() *Config {
	c := &Config{
		Cluster: defaultCluster(),
		Durability: Durability{
			CreateObjectMinimumNodes: 1,
			KeyAvailabilityCheck:     true,
			ServerSyncInterval:       5 * time.Second,
		},
		Client:  Client{RetryOnMissingKey: 3},
		Session: Session{Lifetime: time.Hour, Renegotiate: true},
		Server:  ServerLimits{IdleTimeout: 5 * time.Minute, MaxConnections: 512},
		UI:      UI{Theme: "default"},
	}
	// An absolute base keeps the paths valid if the process changes
	// directory later; if the directory is unknown, relative will do.
	if wd, err := os.Getwd(); err == nil {
		c.base = wd
	}
	c.resolveTLS()
	return c
}

// DefaultPath returns the config file to use when none is named:
// $HSMSH_CONFIG if set, else hsmsh/hsmsh.toml in the user's config folder.
// It returns "" if neither is known. getenv may be nil.
func DefaultPath(getenv func(string) string) string {
	if getenv != nil {
		if p := getenv("HSMSH_CONFIG"); p != "" {
			return p
		}
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "hsmsh", "hsmsh.toml")
}

// Load reads the config file at path and then applies the environment
// through getenv (nil means no environment).
//
// If path is "", or the file does not exist and mustExist is false, the
// defaults are used and Path stays "". If mustExist is true, a missing file is
// an error.
func Load(path string, mustExist bool, getenv func(string) string) (*Config, error) {
	if path == "" {
		return load("", nil, getenv)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !mustExist {
			return load("", nil, getenv)
		}
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return load(path, data, getenv)
}

// load builds a Config from the file contents data (named path; "" for no
// file) and the environment, and checks that the result is coherent.
func load(path string, data []byte, getenv func(string) string) (*Config, error) {
	c := Default()
	var d *tomlscan.Doc
	if path != "" {
		var err error
		if c, d, err = parse(path, data); err != nil {
			return nil, err
		}
	}
	if getenv != nil {
		var errs []error
		for _, s := range settings {
			name := envName(s.name)
			v := getenv(name)
			if v == "" {
				continue
			}
			if err := c.apply(s, v, ""); err != nil {
				errs = append(errs, &Error{Key: name, Msg: err.Error()})
				continue
			}
			c.setSource(s.name, SourceEnv)
		}
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
	}
	if c.Cluster.Mode == "remote" && len(c.Cluster.Servers) == 0 {
		e := &Error{Key: "cluster.mode", Msg: `mode "remote" needs servers; add [[cluster.servers]] entries with id and address, or use mode "embedded"`}
		switch c.Source("cluster.mode") {
		case SourceFile:
			e.File, e.Line = path, d.KeyLine("cluster.mode")
		case SourceEnv:
			e.Key = envName("cluster.mode")
		}
		return nil, e
	}
	// The file's ids were checked as it was parsed; only the environment
	// can have given [cluster] the id of a [[clusters]] table since.
	if i := c.clusterIndex(c.Cluster.ID); i >= 0 {
		return nil, &Error{Key: envName("cluster.id"), Msg: fmt.Sprintf(
			"cluster id %q is also the id of the [[clusters]] table at %s:%d; give each cluster its own id",
			c.Cluster.ID, path, d.KeyLine(fmt.Sprintf("clusters[%d].id", i)))}
	}
	return c, nil
}

// envName returns the environment variable for a setting:
// cluster.hsms -> HSMSH_CLUSTER_HSMS.
func envName(name string) string {
	return "HSMSH_" + strings.ToUpper(strings.ReplaceAll(name, ".", "_"))
}

// Set changes one setting, named as in the file ("cluster.hsms"), to value,
// recording src as its source. It refuses to override a setting that came
// from a higher-precedence source, so that for instance `config set` cannot
// undo a command-line flag. Relative TLS paths are taken relative to the
// current directory.
func (c *Config) Set(name, value string, src Source) error {
	s, ok := lookupSetting(name)
	if !ok {
		return fmt.Errorf("unknown setting %q (known settings: %s)", name, strings.Join(settingNames(), ", "))
	}
	if src.rank() == 0 {
		return fmt.Errorf("%s: unknown source %q", name, src)
	}
	if cur := c.Source(name); cur.rank() > src.rank() {
		return fmt.Errorf("%s was set by %s; it takes precedence over %s", name, c.setBy(name, cur), over(src))
	}
	if name == "cluster.id" && c.clusterIndex(value) >= 0 {
		return &Error{Key: name, Msg: fmt.Sprintf("%q is already the id of a [[clusters]] table; give each cluster its own id", value)}
	}
	if err := c.apply(s, value, ""); err != nil {
		return &Error{Key: name, Msg: err.Error()}
	}
	c.setSource(name, src)
	return nil
}

// setBy describes where the setting name got its value, for error messages.
func (c *Config) setBy(name string, src Source) string {
	switch src {
	case SourceFile:
		if c.Path != "" {
			return "the config file " + c.Path
		}
		return "the config file"
	case SourceEnv:
		return "the environment variable " + envName(name)
	case SourceCommand:
		return "config set"
	case SourceFlag:
		return "a command-line flag"
	}
	return "the default"
}

// over names a source that lost to a higher one, for error messages.
func over(src Source) string {
	switch src {
	case SourceFile:
		return "the config file"
	case SourceEnv:
		return "the environment"
	case SourceCommand:
		return "config set"
	case SourceFlag:
		return "a command-line flag"
	}
	return "the default"
}

// Source returns where the named setting's value came from, or "" if there
// is no such setting.
func (c *Config) Source(name string) Source {
	if _, ok := lookupSetting(name); !ok {
		return ""
	}
	if src, ok := c.sources[name]; ok {
		return src
	}
	return SourceDefault
}

func (c *Config) setSource(name string, src Source) {
	if c.sources == nil {
		c.sources = make(map[string]Source)
	}
	c.sources[name] = src
}

// Settings returns every scalar setting, sorted by name, with its current
// value formatted as it would be written in the file and its source.
func (c *Config) Settings() []Setting {
	out := make([]Setting, 0, len(settings))
	for _, s := range settings {
		set := Setting{Name: s.name, Value: s.format(c), Source: c.Source(s.name)}
		if c.Cluster.Mode != "remote" && strings.HasPrefix(s.name, "tls.") {
			// The embedded cluster's nested TLS uses a PKI of its own in
			// its data folder; these paths matter to the remote mode (and
			// to pki init and serve) only.
			set.Note = "not used by the embedded cluster, which keeps its own PKI in its data folder (clusters/ID/pki); used in remote mode, by hsmsh serve and pki init"
		}
		if s.name == "cluster.transport" {
			set.Note = transportNote(c.Cluster)
		}
		out = append(out, set)
	}
	return out
}

// transportNote says plainly what cluster.transport does for cl.
func transportNote(cl Cluster) string {
	switch {
	case cl.Mode == "remote":
		return "not used in remote mode: the servers are always reached over nested TLS on TCP"
	case cl.Transport == "direct":
		return "in-process: the client library calls each HSM's door as a function, with no TLS (the default, and what BENCHMARKS.md holds against SoftHSM2); \"tls\" runs both TLS layers over in-memory pipes, for teaching them without servers"
	}
	return "nested TLS over in-memory pipes to each in-process HSM, both layers as to a remote server; \"direct\" (the default) calls the HSMs in-process, faster"
}

// Clone returns a deep copy of c, including the sources, the clusters and
// their servers.
func (c *Config) Clone() *Config {
	d := *c
	d.Cluster.Servers = slices.Clone(c.Cluster.Servers)
	d.Clusters = slices.Clone(c.Clusters)
	for i := range d.Clusters {
		d.Clusters[i].Servers = slices.Clone(c.Clusters[i].Servers)
	}
	d.Quorum.Rules = slices.Clone(c.Quorum.Rules)
	d.sources = maps.Clone(c.sources)
	return &d
}

// resolveTLS recomputes c.TLS from the paths that were set explicitly,
// filling in the rest from the PKI folder.
func (c *Config) resolveTLS() {
	t := c.given
	if t.PKIDir == "" {
		t.PKIDir = filepath.Join(c.base, "pki")
	}
	for _, s := range settings {
		if s.kind == kindPath && s.file != "" {
			if p := s.path(&t); *p == "" {
				*p = filepath.Join(t.PKIDir, s.file)
			}
		}
	}
	c.TLS = t
}
