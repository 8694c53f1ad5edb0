package config

import (
	"fmt"
	"strings"
)

// defaultCluster returns the built-in [cluster] table. [[clusters]] entries
// start from it too, so that one file does not mean two different things by
// "the default" for the same key.
func defaultCluster() Cluster {
	return Cluster{ID: "cluster-local", Mode: "embedded", HSMs: 3, Transport: "direct", Profile: "none"}
}

// ClusterIDs returns the id of every cluster: the [cluster] table's first,
// then those of the [[clusters]] tables in file order.
func (c *Config) ClusterIDs() []string {
	ids := make([]string, 0, 1+len(c.Clusters))
	ids = append(ids, c.Cluster.ID)
	for _, cl := range c.Clusters {
		ids = append(ids, cl.ID)
	}
	return ids
}

// ClusterByID returns the cluster with the given id: the [cluster] table if
// it has that id, else the [[clusters]] entry that does. It reports false if
// no cluster has it.
func (c *Config) ClusterByID(id string) (Cluster, bool) {
	if c.Cluster.ID == id {
		return c.Cluster, true
	}
	if i := c.clusterIndex(id); i >= 0 {
		return c.Clusters[i], true
	}
	return Cluster{}, false
}

// clusterIndex returns the index in c.Clusters of the cluster with the given
// id, or -1.
func (c *Config) clusterIndex(id string) int {
	for i, cl := range c.Clusters {
		if cl.ID == id {
			return i
		}
	}
	return -1
}

// clusters checks the [[clusters]] tables. Each entry takes the keys of
// [cluster] and is checked by the same settings, so that the two cannot
// drift apart; only id has no default, since one default would be the same
// for every entry.
func (p *parser) clusters(v any) {
	list, ok := p.arrayOfTables("clusters", v)
	if !ok {
		return
	}
	for i, m := range list {
		key := fmt.Sprintf("clusters[%d]", i)
		cl := defaultCluster()
		cl.ID = ""
		ok, serversOK := true, true
		for _, k := range sortedKeys(m) {
			if k == "servers" {
				cl.Servers, serversOK = p.servers(key+".servers", m[k])
				continue
			}
			s, known := lookupSetting("cluster." + k)
			if !known {
				p.errorf(key+"."+k, "unknown key (known keys in [[clusters]]: %s)", strings.Join(tables["clusters"], ", "))
				ok = false
				continue
			}
			str, good := p.scalar(key+"."+k, s, m[k])
			if !good {
				ok = false
				continue
			}
			if err := applyCluster(&cl, s, str); err != nil {
				p.errorf(key+"."+k, "%v", err)
				ok = false
			}
		}
		if _, has := m["id"]; !has {
			p.errorf(key, "cluster has no id; add id = %q (or any id no other cluster uses) to this [[clusters]] table",
				fmt.Sprintf("cluster-%d", i+2))
			ok = false
		}
		// Bad server tables were reported already; an empty list was not.
		if cl.Mode == "remote" && serversOK && len(cl.Servers) == 0 {
			p.errorf(key+".mode", `mode "remote" needs servers; add [[clusters.servers]] tables with id and address after this [[clusters]] table, or use mode "embedded"`)
			ok = false
		}
		if !ok || !serversOK {
			continue
		}
		p.c.Clusters = append(p.c.Clusters, cl)
		p.clusterKeys = append(p.clusterKeys, key)
	}
}

// applyCluster parses value for s, one of the [cluster] settings, and
// stores it in cl rather than in a Config's [cluster] table.
func applyCluster(cl *Cluster, s *setting, value string) error {
	scratch := Config{Cluster: *cl}
	if err := scratch.apply(s, value, ""); err != nil {
		return err
	}
	*cl = scratch.Cluster
	return nil
}

// checkClusterIDs reports a [[clusters]] table that reuses the id of
// [cluster] or of an earlier [[clusters]] table: a cluster is picked by its
// id, so each must have its own.
func (p *parser) checkClusterIDs() {
	first := make(map[string]string) // id -> key where it was first used
	for i, cl := range p.c.Clusters {
		key := p.clusterKeys[i] + ".id"
		if cl.ID == p.c.Cluster.ID {
			if p.c.Source("cluster.id") == SourceFile {
				p.errorf(key, "duplicate cluster id %q (also used at line %d); give each cluster its own id",
					cl.ID, p.doc.KeyLine("cluster.id"))
			} else {
				p.errorf(key, "duplicate cluster id %q (the default id of the [cluster] table); give each cluster its own id, or set another id in [cluster]",
					cl.ID)
			}
			continue
		}
		if at, dup := first[cl.ID]; dup {
			p.errorf(key, "duplicate cluster id %q (also used at line %d); give each cluster its own id",
				cl.ID, p.doc.KeyLine(at))
			continue
		}
		first[cl.ID] = key
	}
}
