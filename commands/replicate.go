package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore"
	"github.com/hsmsh/hsmsh/hsmcore/host"
)

// Backups, clones and replication between clusters (key-sync seed, last
// bullet; CloudHSM CLI's key replicate and user replicate).

// backupExt names backup files under the data folder.
const backupExt = ".hsmbak"

var backupName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// memory marks a backup kept in memory (no data folder: --ephemeral).
const memory = "(memory)"

// saveBackup keeps a new backup: under the data folder, or in memory for
// this run when there is none (the teaching demos run --ephemeral).
func (e *Env) saveBackup(cluster, id string, file []byte) (string, error) {
	if e.set == nil {
		return "", errors.New("this shell keeps no backups: give --file PATH")
	}
	if e.set.dataDir == "" {
		e.set.mu.Lock()
		defer e.set.mu.Unlock()
		if e.set.backups == nil {
			e.set.backups = map[string][]byte{}
		}
		e.set.backups[id] = file
		return memory, nil
	}
	path := filepath.Join(e.set.dataDir, "backups", cluster, id+backupExt)
	return path, writeNew(path, file)
}

// readBackup reads --backup: a file path, or a backup id (under the data
// folder, or in memory).
func (e *Env) readBackup(name string) (path string, file []byte, err error) {
	if e.set != nil {
		e.set.mu.Lock()
		b, ok := e.set.backups[name]
		e.set.mu.Unlock()
		if ok {
			return memory, b, nil
		}
	}
	if path, err = e.findBackup(name); err != nil {
		return "", nil, err
	}
	file, err = os.ReadFile(path)
	if err != nil {
		return "", nil, fmt.Errorf("read backup: %w", err)
	}
	return path, file, nil
}

// BackupView is a backup as backup list shows it.
type BackupView struct {
	ID      string `json:"backup-id"`
	Cluster string `json:"cluster-id"`
	HSM     string `json:"hsm"`
	Domain  string `json:"domain"`
	Created string `json:"created"`
	Keys    int    `json:"keys"`
	Users   int    `json:"users"`
	Path    string `json:"path"`
}

func backupView(id, path string, info hsmcore.BackupInfo) BackupView {
	return BackupView{ID: id, Cluster: info.Cluster, HSM: info.HSM, Domain: info.Domain,
		Created: info.Created.Format(time.RFC3339), Keys: info.Keys, Users: info.Users, Path: path}
}

// findBackup resolves --backup: a file path, or a backup id under the
// data folder (of any cluster).
func (e *Env) findBackup(name string) (string, error) {
	if strings.ContainsRune(name, os.PathSeparator) || strings.HasSuffix(name, backupExt) {
		return e.path(name), nil
	}
	if e.set == nil || e.set.dataDir == "" {
		return "", fmt.Errorf("no backup %q in this run: cluster backup list shows the backups there are", name)
	}
	matches, _ := filepath.Glob(filepath.Join(e.set.dataDir, "backups", "*", name+backupExt))
	switch len(matches) {
	case 0:
		return "", fmt.Errorf("no backup %q: cluster backup list shows the backups there are", name)
	case 1:
		return matches[0], nil
	}
	return "", fmt.Errorf("backup id %q is in more than one cluster's folder; give the file's path", name)
}

// loggedIn is the caller of env's cluster, or an error naming the cluster.
func loggedIn(env *Env, what string, roles ...hsmcore.Role) (hsmcore.Caller, error) {
	c, err := env.Session.Caller()
	if err != nil {
		return c, fmt.Errorf("%s: not logged in to cluster %s: run login --cluster-id %s first", what, env.Session.Cluster().ID(), env.Session.Cluster().ID())
	}
	if len(roles) > 0 && !slices.Contains(roles, c.Role) {
		return c, fmt.Errorf("%s: you are logged in to cluster %s as %s (%s); this needs %s", what, env.Session.Cluster().ID(), c.Username, c.Role, roles[0])
	}
	return c, nil
}

// sameDomain refuses replication between clusters of different domains.
func sameDomain(src, dst *Env) error {
	a, err := src.Session.Cluster().DomainID()
	if err != nil {
		return err
	}
	b, err := dst.Session.Cluster().DomainID()
	if err != nil {
		return err
	}
	if a != b {
		return fmt.Errorf("clusters %s and %s are of different domains (%s, %s): keys and users replicate only between a cluster and its clones", src.Session.Cluster().ID(), dst.Session.Cluster().ID(), a, b)
	}
	return nil
}

// srcDst resolves --source-cluster-id and --destination-cluster-id.
func srcDst(env *Env, a *Args) (src, dst *Env, err error) {
	if a.String("source-cluster-id") == a.String("destination-cluster-id") {
		return nil, nil, errors.New("the source and destination clusters are the same: replicate goes between a cluster and its clone")
	}
	if src, err = env.On(a.String("source-cluster-id")); err != nil {
		return nil, nil, err
	}
	if dst, err = env.On(a.String("destination-cluster-id")); err != nil {
		return nil, nil, err
	}
	return src, dst, sameDomain(src, dst)
}

var (
	srcFlag = Flag{Name: "source-cluster-id", Kind: String, Required: true, Help: "the cluster to copy from"}
	dstFlag = Flag{Name: "destination-cluster-id", Kind: String, Required: true, Help: "the cluster to copy to (a clone of the same domain)"}
)

func replicateCommands() []*Command {
	return []*Command{
		{
			Path: []string{"use-cluster"}, Who: Anyone, Args: []string{"CLUSTER-ID"},
			Summary: "make another cluster the one commands run on (each keeps its own login)",
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				if err := env.Use(a.Pos[0]); err != nil {
					return nil, err
				}
				return map[string]any{"cluster-id": a.Pos[0]}, nil
			},
		},
		{
			Path: []string{"cluster", "list"}, Who: Anyone,
			Summary: "list the clusters this shell knows: the configuration's and the clones",
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				cur := env.Current().Session.Cluster().ID()
				var out []map[string]any
				for _, id := range env.ClusterIDs() {
					row := map[string]any{"cluster-id": id, "current": id == cur}
					if e, err := env.On(id); err != nil {
						row["error"] = err.Error()
					} else {
						if u, role, ok := e.Who(); ok {
							row["logged-in-as"] = u + " (" + role + ")"
						}
						if d, err := e.Session.Cluster().DomainID(); err == nil {
							row["domain"] = d
						}
					}
					out = append(out, row)
				}
				return out, nil
			},
		},
		{
			Path: []string{"cluster", "backup", "create"}, Who: AdminOnly,
			Summary: "back up the cluster: its keys, users and quorum state, sealed by an HSM under a backup password",
			Flags: []Flag{
				{Name: "backup-password", Kind: String, Secret: true, Help: "the password the backup is sealed under (asked for when left out)"},
				{Name: "file", Kind: String, Path: true, Help: "where to write it (default: the data folder's backups/CLUSTER/)"},
				{Name: "name", Kind: String, Help: "the backup's id (default: CLUSTER-TIME-RANDOM)"},
			},
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				c, err := env.Session.Caller()
				if err != nil {
					return nil, err
				}
				pw, err := secretFlag(env, a, "backup-password", "Backup password: ")
				if err != nil {
					return nil, err
				}
				cluster := env.Session.Cluster()
				file, info, err := cluster.CreateBackup(ctx, c, pw)
				if err != nil {
					return nil, err
				}
				// Two backups in one second must not collide.
				id := fmt.Sprintf("%s-%s-%x", cluster.ID(), info.Created.Format("20060102T150405Z"), info.Salt[:3])
				if a.Has("name") {
					if id = a.String("name"); !backupName.MatchString(id) {
						return nil, fmt.Errorf("--name %q: a backup id is 1 to 64 letters, digits, '.', '_' or '-'", id)
					}
				}
				path := a.String("file")
				if path != "" {
					path = env.path(path)
					err = writeNew(path, file)
				} else {
					path, err = env.saveBackup(cluster.ID(), id, file)
				}
				if err != nil {
					return nil, err
				}
				return backupView(id, path, info), nil
			},
		},
		{
			Path: []string{"cluster", "backup", "list"}, Who: Anyone,
			Summary: "list the backups in the data folder (no password needed: their headers are in clear, and checked when restored)",
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				out := []BackupView{}
				if env.set == nil {
					return out, nil
				}
				env.set.mu.Lock()
				for _, id := range slices.Sorted(maps.Keys(env.set.backups)) {
					if info, err := hsmcore.ReadBackupInfo(env.set.backups[id]); err == nil {
						out = append(out, backupView(id, memory, info))
					}
				}
				env.set.mu.Unlock()
				if env.set.dataDir == "" {
					return out, nil
				}
				paths, _ := filepath.Glob(filepath.Join(env.set.dataDir, "backups", "*", "*"+backupExt))
				slices.Sort(paths)
				for _, p := range paths {
					b, err := os.ReadFile(p)
					if err != nil {
						return nil, err
					}
					info, err := hsmcore.ReadBackupInfo(b)
					if err != nil {
						return nil, fmt.Errorf("%s: %w", p, err)
					}
					out = append(out, backupView(strings.TrimSuffix(filepath.Base(p), backupExt), p, info))
				}
				return out, nil
			},
		},
		{
			Path: []string{"cluster", "clone"}, Who: Anyone,
			Summary: "make a new embedded cluster from a backup: same domain, so keys and users replicate between them",
			Flags: []Flag{
				{Name: "backup", Kind: String, Required: true, Help: "the backup id (cluster backup list) or file"},
				{Name: "id", Kind: String, Required: true, Help: "the new cluster's id"},
				{Name: "hsms", Kind: Int, Help: "how many HSMs it has (default: cluster.hsms)"},
				{Name: "backup-password", Kind: String, Secret: true, Help: "the backup's password (asked for when left out)"},
			},
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				return cloneCluster(env, a)
			},
		},
		{
			Path: []string{"key", "replicate"}, Who: Anyone,
			Summary: "copy a key from a cluster to its clone, wrapped under their domain key (logged in as its owner on both)",
			Flags:   []Flag{filterFlag, srcFlag, dstFlag},
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				src, dst, err := srcDst(env, a)
				if err != nil {
					return nil, err
				}
				sc, err := loggedIn(src, "key replicate", hsmcore.RoleCryptoUser)
				if err != nil {
					return nil, err
				}
				dc, err := loggedIn(dst, "key replicate", hsmcore.RoleCryptoUser)
				if err != nil {
					return nil, err
				}
				_, k, err := oneKey(ctx, src, a.List("filter"))
				if err != nil {
					return nil, err
				}
				switch {
				case k.Session:
					return nil, fmt.Errorf("key %s is a session key: only token keys replicate", k.Ref)
				case k.Info.ClusterCoverage != hsmcore.CoverageFull:
					//lint:ignore ST1005 CloudHSM CLI's own words, which scripts match
					return nil, errors.New("The selected key is not synchronized throughout the cluster")
				}
				kc, err := src.Session.Cluster().ExportKey(ctx, sc, k.Ref)
				if err != nil {
					return nil, err
				}
				if err := dst.Session.Cluster().ReplicateKey(ctx, dc, kc); err != nil {
					return nil, err
				}
				keys, err := dst.Session.Cluster().Keys(ctx, dc, hsmcore.Filter{Ref: &k.Ref})
				if err != nil || len(keys) != 1 {
					return nil, fmt.Errorf("key %s was replicated but is not listed in %s: %v", k.Ref, dst.Session.Cluster().ID(), err)
				}
				return map[string]any{"key": fullKey(keys[0]), "message": "Successfully replicated key"}, nil
			},
		},
		{
			Path: []string{"user", "replicate"}, Who: Anyone,
			Summary: "copy a user (its password hash) from a cluster to its clone (logged in as admin on both)",
			Flags: []Flag{
				{Name: "username", Kind: String, Required: true, Help: "the user"},
				roleFlag("admin", "crypto-user"), srcFlag, dstFlag,
			},
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				src, dst, err := srcDst(env, a)
				if err != nil {
					return nil, err
				}
				sc, err := loggedIn(src, "user replicate", hsmcore.RoleAdmin)
				if err != nil {
					return nil, err
				}
				dc, err := loggedIn(dst, "user replicate", hsmcore.RoleAdmin)
				if err != nil {
					return nil, err
				}
				u, err := src.Session.Cluster().ExportUser(ctx, sc, a.String("username"), hsmcore.Role(a.String("role")))
				if err != nil {
					return nil, err
				}
				if err := dst.Session.Cluster().ReplicateUser(ctx, dc, u); err != nil {
					return nil, err
				}
				name, _ := hsmcore.NormalizeUsername(a.String("username"))
				users, err := dst.Session.Cluster().Users(ctx, dc)
				if err != nil {
					return nil, fmt.Errorf("user %s was replicated, but listing the users of %s failed: %w", name, dst.Session.Cluster().ID(), err)
				}
				for _, v := range users {
					if v.Username == name && string(v.Role) == a.String("role") {
						return map[string]any{"user": v, "message": "Successfully replicated user"}, nil
					}
				}
				return nil, fmt.Errorf("user %s was replicated but is not listed in %s", name, dst.Session.Cluster().ID())
			},
		},
	}
}

// writeNew writes a file that must not exist yet, privately (its folder
// made if need be).
func writeNew(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return createFile(path, path, "--file or --name", b, 0o600)
}

// cloneCluster is cluster clone.
func cloneCluster(env *Env, a *Args) (any, error) {
	id := a.String("id")
	if slices.Contains(env.ClusterIDs(), id) {
		return nil, fmt.Errorf("cluster %s already exists: choose another id for the clone", id)
	}
	path, file, err := env.readBackup(a.String("backup"))
	if err != nil {
		return nil, err
	}
	pw, err := secretFlag(env, a, "backup-password", "Backup password: ")
	if err != nil {
		return nil, err
	}
	hsms := env.Config.Cluster.HSMs
	if a.Has("hsms") {
		hsms = a.Int("hsms")
	}
	if hsms < 1 || hsms > 32 {
		return nil, fmt.Errorf("--hsms %d: a clone has 1 to 32 HSMs", hsms)
	}
	dataDir := ""
	if env.set != nil {
		dataDir = env.set.dataDir
	}
	rules, client, err := clientSide(env.Config, dataDir)
	if err != nil {
		return nil, err
	}
	opts := embeddedOptions(env.Config, dataDir, id, hsms, env.Config.Cluster.Transport, rules, client)
	c, info, err := host.Clone(opts, file, pw)
	if err != nil {
		return nil, fmt.Errorf("clone %s from %s: %w", id, path, err)
	}
	if dataDir != "" {
		spec := cloneSpec{ID: id, HSMs: hsms, Transport: env.Config.Cluster.Transport, Backup: path, Source: info.Cluster}
		if err := writeJSON(filepath.Join(opts.DataDir, cloneFile), spec); err != nil {
			c.Close()
			return nil, err
		}
	}
	if err := env.set.add(id, c); err != nil {
		c.Close()
		return nil, err
	}
	return map[string]any{"cluster-id": id, "hsms": hsms, "source-cluster-id": info.Cluster, "domain": info.Domain,
		"keys": info.Keys, "users": info.Users, "backup": path}, nil
}

// writeJSON writes v to a new file, durably.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeNew(path, append(b, '\n'))
}
