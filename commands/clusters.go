package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/hsmsh/hsmsh/config"
	"github.com/hsmsh/hsmsh/hsmcore"
	"github.com/hsmsh/hsmsh/hsmcore/host"
	"github.com/hsmsh/hsmsh/session"
)

// Several clusters in one shell, as in CloudHSM CLI: the configuration's
// [cluster] (the default) and [[clusters]], and the clones made from
// backups. Each has its own login; `use-cluster` switches which one
// commands run on, and any command can name another with --cluster-id.

// clusterSet is the clusters an Env and its copies share.
type clusterSet struct {
	cfg     *config.Config
	dataDir string

	mu       sync.Mutex
	backups  map[string][]byte           // with no data folder, backups by id, for this run
	sessions map[string]*session.Session // opened clusters
	opened   []string                    // in the order they opened
	current  string
}

// cloneFile records a clone's shape in its data folder, so that later runs
// know the cluster without a config entry.
const cloneFile = "clone.json"

// cloneSpec is what cloneFile holds.
type cloneSpec struct {
	ID        string `json:"id"`
	HSMs      int    `json:"hsms"`
	Transport string `json:"transport"`
	Backup    string `json:"backup"`
	Source    string `json:"source-cluster"`
}

func (s *clusterSet) cloneDir(id string) string {
	return filepath.Join(s.dataDir, "clusters", id)
}

// readClone reads a clone's record, if id is one.
func (s *clusterSet) readClone(id string) (cloneSpec, bool, error) {
	var c cloneSpec
	if s.dataDir == "" {
		return c, false, nil
	}
	b, err := os.ReadFile(filepath.Join(s.cloneDir(id), cloneFile))
	if errors.Is(err, os.ErrNotExist) {
		return c, false, nil
	}
	if err != nil {
		return c, false, err
	}
	if err := json.Unmarshal(b, &c); err != nil || c.ID != id || c.HSMs < 1 {
		return c, false, fmt.Errorf("clone record %s is damaged: move the folder away, or clone again", filepath.Join(s.cloneDir(id), cloneFile))
	}
	return c, true, nil
}

// IDs lists the clusters this shell knows: the configuration's, then the
// clones (on disk, or made in this run).
func (s *clusterSet) ids() []string {
	ids := s.cfg.ClusterIDs()
	if s.dataDir != "" {
		entries, _ := os.ReadDir(filepath.Join(s.dataDir, "clusters"))
		for _, en := range entries {
			if _, ok, _ := s.readClone(en.Name()); ok && !slices.Contains(ids, en.Name()) {
				ids = append(ids, en.Name())
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range s.opened {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// get returns cluster id's session, opening the cluster on first use.
func (s *clusterSet) get(id string) (*session.Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss, ok := s.sessions[id]; ok {
		return ss, nil
	}
	c, err := s.openLocked(id)
	if err != nil {
		return nil, err
	}
	ss := session.New(c)
	s.sessions[id] = ss
	s.opened = append(s.opened, id)
	return ss, nil
}

func (s *clusterSet) openLocked(id string) (hsmcore.Cluster, error) {
	if cl, ok := s.cfg.ClusterByID(id); ok {
		cfg := *s.cfg // the shared settings, with this cluster's shape
		cfg.Cluster = cl
		return openCluster(&cfg, s.dataDir)
	}
	spec, ok, err := s.readClone(id)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("no cluster %q: the configuration has %s, and no clone of that id exists; run cluster clone to make one", id, strings.Join(s.cfg.ClusterIDs(), ", "))
	}
	rules, client, err := clientSide(s.cfg, s.dataDir)
	if err != nil {
		return nil, err
	}
	return host.Embedded(embeddedOptions(s.cfg, s.dataDir, spec.ID, spec.HSMs, spec.Transport, rules, client))
}

// add registers a cluster opened elsewhere (a new clone).
func (s *clusterSet) add(id string, c hsmcore.Cluster) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sessions[id]; ok {
		return fmt.Errorf("cluster %s is already open", id)
	}
	s.sessions[id] = session.New(c)
	s.opened = append(s.opened, id)
	return nil
}

func (s *clusterSet) close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, id := range s.opened {
		ss := s.sessions[id]
		errs = append(errs, ss.Close(ctx), ss.Cluster().Close())
	}
	return errors.Join(errs...)
}

// On returns a copy of e that runs on cluster id ("" is the current one).
func (e *Env) On(id string) (*Env, error) {
	if e.set == nil {
		if id == "" || id == e.Session.Cluster().ID() {
			return e, nil
		}
		return nil, fmt.Errorf("no cluster %q here", id)
	}
	if id == "" {
		e.set.mu.Lock()
		id = e.set.current
		e.set.mu.Unlock()
	}
	ss, err := e.set.get(id)
	if err != nil {
		return nil, err
	}
	cp := *e
	cp.Session, cp.pinned = ss, true
	return &cp, nil
}

// Current is e on the current cluster; a copy On made stays on its own.
func (e *Env) Current() *Env {
	if e.pinned {
		return e
	}
	cur, err := e.On("")
	if err != nil {
		return e // the current cluster is always open
	}
	return cur
}

// Use makes id the current cluster, opening it if need be.
func (e *Env) Use(id string) error {
	if e.set == nil {
		return errors.New("this shell has one cluster only")
	}
	if _, err := e.set.get(id); err != nil {
		return err
	}
	e.set.mu.Lock()
	e.set.current = id
	e.set.mu.Unlock()
	return nil
}

// ClusterIDs lists the clusters the shell knows.
func (e *Env) ClusterIDs() []string {
	if e.set == nil {
		return []string{e.Session.Cluster().ID()}
	}
	return e.set.ids()
}
